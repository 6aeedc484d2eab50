"""FO-ANIL's and ANIL's outer gradient of the two-layer network in one compiled pass over the
tasks: the CPU path for one inner step in float64 (`applies`), the torch path
(`metarep.nonlinear.meta`) being the general one and the reference it is tested against.

With Z_i = X_i W1^T + b1 and F_i = act(Z_i) (m_in, n) for task i's inner rows, Z'_i and F'_i
for its outer rows, one head step gives

    r_i  = F_i w - y_i,               W_i = w - (alpha / m_in) F_i^T r_i,
    r'_i = F'_i W_i - y'_i,           L_i = |r'_i|^2 / (2 m_out),   u_i = dL_i/dW_i = F'_i^T r'_i / m_out,

and the outer objective is (1/N) sum_i L_i. Its gradient, task by task:

- through the outer features: dL_i/dF'_i = r'_i W_i^T / m_out;
- FO-ANIL takes W_i's derivative in w as the identity: dL_i/dw = u_i;
- ANIL differentiates W_i: dW_i/dw = I - (alpha / m_in) F_i^T F_i, so
  dL_i/dw = u_i - (alpha / m_in) F_i^T F_i u_i, and, from d(u^T F^T (F w - y)) =
  (F u).(dF w) + (dF u).(F w - y), dL_i/dF_i = -(alpha / m_in) (r_i u_i^T + F_i u_i w^T);
- a feature gradient dF becomes dZ = dF * act'(Z), and dL/dW1 = dZ^T X, dL/db1 = the sum of
  dZ's rows.

The kernel (`metarep._compiled_network`) forms a block of 32 tasks' features by two matrix
products, runs the per-task lines above in loops while the block is in cache, and adds the
block's dZ^T X by two more; blocks are grouped into fixed units with their own partial sums,
taken by `metarep.threads` and added in unit order (results do not depend on the thread count).
tests/test_nonlinear_gradients.py checks it against a per-task torch.autograd loop.
"""

from __future__ import annotations

import numpy as np

from metarep import kernels, threads
from metarep.nonlinear.model import MLPParams

# Fixed groups of blocks, each with its own (n, d) partial sum of the first layer's gradient.
GROUPS = 32


def applies(params: MLPParams, *, device: str, dtype: str, inner_steps: int, adapt_body: bool) -> bool:
    """Whether the compiled pass computes this gradient: a head-only method with one inner step,
    two layers, on the CPU in float64, with the numba kernel backend in effect."""
    return (not adapt_body and inner_steps == 1 and params.layers == 2 and device == "cpu"
            and dtype == "float64" and kernels.backend() == "numba" and kernels.compiled_available())


def _arrays(tasks) -> tuple[np.ndarray, ...]:
    """X_in, y_in, X_out, y_out as C-contiguous float64 arrays (torch CPU tensors without a copy)."""
    arrays = (tasks.X_in, tasks.y_in, tasks.X_out, tasks.y_out)
    return tuple(np.ascontiguousarray(a.numpy() if hasattr(a, "numpy") else a, dtype=np.float64) for a in arrays)


def head_pass(params: MLPParams, tasks, *, activation: str, alpha: float, exact: bool) -> tuple[MLPParams, float]:
    """(the outer gradient as MLPParams, the mean outer loss) of FO-ANIL (exact False) or ANIL
    with one inner step. tasks: `metarep.tasks.Tasks` or TorchTasks on the CPU."""
    from metarep._compiled_network import BLOCK, head_pass_units

    X_in, y_in, X_out, y_out = _arrays(tasks)
    N = X_in.shape[0]
    n, d = params.W1.shape
    has_bias = params.b1.size > 0
    b1 = np.ascontiguousarray(params.b1 if has_bias else np.zeros(n), dtype=np.float64)
    groups = max(1, min(GROUPS, -(-N // BLOCK)))
    gW1, gb1, gw, loss = np.empty((groups, n, d)), np.empty((groups, n)), np.empty((groups, n)), np.empty(groups)
    with kernels.step_threads():
        threads.run_units(head_pass_units, groups, X_in.nbytes + X_out.nbytes >= kernels.PARALLEL_MIN_BYTES,
                          X_in, y_in, X_out, y_out, np.ascontiguousarray(params.W1.T, dtype=np.float64), b1,
                          has_bias, np.ascontiguousarray(params.w, dtype=np.float64), float(alpha),
                          activation == "relu", bool(exact), gW1, gb1, gw, loss)
    empty = np.zeros(0)
    grads = MLPParams(gW1.sum(axis=0) / N, gb1.sum(axis=0) / N if has_bias else empty, empty, empty,
                      gw.sum(axis=0) / N)
    return grads, float(loss.sum() / N)
