"""FO-ANIL's and ANIL's outer gradient of the network in one compiled pass over the tasks: the
CPU path (`applies`: two or three layers, any number of head steps, float64 or float32), the
torch path (`metarep.nonlinear.meta`) being the general one and the reference it is tested
against. `head_gradient` puts it before the torch path in the methods' declarations.

Task i's features are F_i = phi(X_i) (m_in, n) for its inner rows and F'_i for its outer rows,
phi(X) = act(Z1), Z1 = X W1^T + b1 (two layers) or phi(X) = act(Z2), Z2 = H W2^T + b2, H = act(Z1)
(three). The inner loop takes s steps on the head alone, the features fixed (c = alpha / m_in):

    W_0 = w,   r_t = F_i W_t - y_i,   W_{t+1} = W_t - c F_i^T r_t          (t = 0 .. s-1),
    r' = F'_i W_s - y'_i,   L_i = |r'|^2 / (2 m_out),   u = dL_i/dW_s = F'_i^T r' / m_out,

and the outer objective is (1/N) sum_i L_i. Its gradient, task by task:

- through the outer features: dL_i/dF'_i = r' W_s^T / m_out;
- FO-ANIL takes dW_s/dw as the identity and no derivative through F_i: dL_i/dw = u;
- ANIL runs the steps backwards from g_s = u: with dW_{t+1}/dW_t = I - c F_i^T F_i,
  g_t = g_{t+1} - c F_i^T (F_i g_{t+1}), dL_i/dw = g_0 (for s = 1: u - c F_i^T F_i u); and from
  d(g^T F^T (F W - y)) = (F g).(dF W) + (dF g).(F W - y), step t adds
  -c (r_t g_{t+1}^T + F_i g_{t+1} W_t^T) to dL_i/dF_i;
- a feature gradient dF becomes dZ = dF * act'(Z) of the last layer; with three layers
  dL/dW2 = dZ2^T H, dL/db2 = the sum of dZ2's rows, and dZ1 = (dZ2 W2) * act'(Z1); then
  dL/dW1 = dZ1^T X, dL/db1 = the sum of dZ1's rows.

The kernel (`metarep.compute._compiled_network`) forms a block of 32 tasks' features by matrix products,
runs the per-task lines above in loops while the block is in cache (W_0..W_s and r_0..r_{s-1}
kept for the backward steps), and adds the block's layer gradients by more products; blocks are
grouped into fixed units with their own partial sums, taken by `metarep.compute.threads` and added in
unit order (results do not depend on the thread count). tests/test_nonlinear_fused3.py and
tests/test_nonlinear_gradients.py check it against a per-task torch.autograd loop.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from metarep.compute import kernels, threads
from metarep.nonlinear.model import MLPParams

# Fixed groups of blocks, each with its own partial sums of the body's gradient.
GROUPS = 32
DTYPES = {"float64": np.float64, "float32": np.float32}
# Tasks per block, two layers (False) and three (True): a block's features, 32 x 30 x 50 doubles
# (384 KB) in the paper's setting, stay in cache from the product that makes them to the one
# that takes their gradient (32 measured 5-10% faster than 64 or 128 there, two layers).
BLOCK = {False: 32, True: 32}


def applies(params: MLPParams, *, device: str, dtype: str, inner_steps: int, adapt_body: bool) -> bool:
    """Whether the compiled pass computes this gradient: a head-only method (FO-ANIL, ANIL), two
    or three layers (deeper networks take the torch path), any number of inner steps, on the CPU
    in float64 or float32, with the numba kernel backend in effect."""
    return (not adapt_body and int(inner_steps) == inner_steps and inner_steps >= 1 and params.w.ndim == 1
            and params.layers <= 3
            and device == "cpu" and dtype in DTYPES and kernels.backend() == "numba"
            and kernels.compiled_available())


def head_gradient(torch_gradient: Callable | None, *, exact: bool) -> Callable:
    """FO-ANIL's (exact False) or ANIL's outer gradient, gradient(params, tasks, *, net, alpha,
    inner_steps=1) -> (MLPParams, mean outer loss): this module's pass where it `applies`,
    `torch_gradient` (a method's declared gradient, the same signature) elsewhere."""
    if torch_gradient is None:
        raise ValueError("head_gradient needs the declared (torch) gradient to fall back on")
    fallback: Callable = torch_gradient

    def gradient(params, tasks, *, net, alpha: float, inner_steps: int = 1):
        if not applies(params, device=net.device, dtype=net.dtype, inner_steps=inner_steps, adapt_body=False):
            return fallback(params, tasks, net=net, alpha=alpha, inner_steps=inner_steps)
        grads, loss = head_pass(params, tasks, activation=net.activation, alpha=alpha, exact=exact,
                                inner_steps=inner_steps, dtype=net.dtype)
        if hasattr(params.w, "detach"):            # tensors in, tensors out (sharing the arrays' memory)
            import torch

            grads = MLPParams._make(torch.from_numpy(a) for a in grads)
        return grads, loss

    gradient.__doc__ = fallback.__doc__
    gradient.per_task_body = False  # type: ignore[attr-defined]  # read by the memory estimate
    return gradient


def _numpy(a, dtype) -> np.ndarray:
    """`a` (a NumPy array, or a CPU torch tensor: its zero-copy view) as a C-contiguous array of dtype."""
    if hasattr(a, "detach"):
        a = a.detach().numpy()
    return np.ascontiguousarray(a, dtype=dtype)


def head_pass(params: MLPParams, tasks, *, activation: str, alpha: float, exact: bool, inner_steps: int = 1,
              dtype: str = "float64") -> tuple[MLPParams, float]:
    """(the outer gradient as MLPParams in the dtype of params.w, the mean outer loss) of FO-ANIL
    (exact False) or ANIL with `inner_steps` head steps. params: NumPy arrays (or CPU tensors);
    tasks: `metarep.families.tasks.Tasks` or TorchTasks on the CPU. The features and the body's products
    are in `dtype`; the head steps and the sums over tasks in float64."""
    from metarep.compute._compiled_network import head_pass_units

    if int(inner_steps) != inner_steps or inner_steps < 1:
        raise ValueError(f"inner_steps must be an integer >= 1, got {inner_steps}")
    real = DTYPES[dtype]
    X_in, y_in, X_out, y_out = (_numpy(a, real) for a in (tasks.X_in, tasks.y_in, tasks.X_out, tasks.y_out))
    W1, b1, W2, b2, w = (_numpy(a, real) for a in params)
    N = X_in.shape[0]
    n1, d = W1.shape
    n = w.shape[0]
    has_bias = b1.size > 0
    three = W2.size > 0
    if not three:
        W2 = np.zeros((0, 0), real)
    b1, b2 = (b if b.size else np.zeros(size, real) for b, size in ((b1, n1), (b2, n if three else 0)))
    block = BLOCK[three]
    groups = max(1, min(GROUPS, -(-N // block)))
    gW1, gb1, gw, loss = np.empty((groups, n1, d)), np.empty((groups, n1)), np.empty((groups, n)), np.empty(groups)
    gW2, gb2 = np.empty((groups, *W2.shape)), np.empty((groups, b2.size))
    with kernels.step_threads():
        threads.run_units(head_pass_units, groups, X_in.nbytes + X_out.nbytes >= kernels.PARALLEL_MIN_BYTES,
                          X_in, y_in, X_out, y_out, np.ascontiguousarray(W1.T), b1, np.ascontiguousarray(W2.T), b2,
                          has_bias, w.astype(np.float64), float(alpha), int(inner_steps), activation == "relu",
                          bool(exact), block, gW1, gb1, gW2, gb2, gw, loss)
    out = _numpy(params.w, None).dtype
    empty = np.zeros(0, out)

    def mean(partial, present=True):
        return (partial.sum(axis=0) / N).astype(out, copy=False) if present else empty

    grads = MLPParams(mean(gW1), mean(gb1, has_bias), mean(gW2, three), mean(gb2, three and has_bias), mean(gw))
    return grads, float(loss.sum() / N)
