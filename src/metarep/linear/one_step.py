"""The task sums of a one-inner-step outer gradient, in prediction space (MATH 3: FO-ANIL, ANIL, FO-MAML).

With one inner step from a shared start, every task starts at the same prediction vector
theta = B w and ends at

    theta_i = theta + M g_i + q (theta . g_i) g_i,

where g_i is the inner gradient at theta: M = -alpha B B^T and q = 0 for FO-ANIL and ANIL (the
head adapts), M = -alpha (B B^T + |w|^2 I) and q = alpha^2 for FO-MAML (both layers adapt).
The outer gradients need, over the N tasks,

    g_out = mean_i g'_i                      (d,)      g'_i = X'_i^T (X'_i theta_i - y'_i) / m_out
    cross = mean_i g'_i g_i^T                (d, d)
    h     = mean_i S_i P g'_i                (d,)      exact ANIL only; S_i = X_i^T X_i / m_in
    loss  = mean_i ||X'_i theta_i - y'_i||^2 / (2 m_out)

`one_step_sums` returns them. Two backends, chosen with the kernel backend (`kernels.backend()`,
or the call's `backend=`):

- ``numba``: one pass over blocks of tasks. A block's inner rows are read, its end
  points theta_i formed by one small matrix product, its outer rows read, and its share of
  `cross` formed by another, while the block is still in cache: the task data are read from
  memory once (exact ANIL reads a block's inner rows a second time, from cache). Partial sums
  are kept per fixed group of blocks, the groups are taken one at a time by `threads.count()`
  threads (or the calling thread alone for small calls, `threads.run_units`) and added in
  group order, so results do not depend on the number of threads. Needs SciPy (numba's matrix
  products call its BLAS).
- ``numpy``: the same quantities from `linear.prediction_gradient` and (N, d) x (d, d) products.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from metarep.compute import kernels, threads

__all__ = ["OneStepSums", "applies", "numba_one_step_sums", "numpy_one_step_sums", "one_step_sums"]

# Blocks of tasks (_compiled.ONE_STEP_BLOCK) are dealt to at most _GROUPS groups of consecutive
# blocks, each with its own (d, d) partial sum, so the working memory is at most _GROUPS (d, d)
# arrays (16 MB at _MAX_D; wider problems take the unfused path, whose temporaries are a few
# (N, d) arrays). The numbers are fixed, so the work and the order of every sum never depend
# on the number of threads.
_GROUPS = 32
_MAX_D = 256


class OneStepSums(NamedTuple):
    """Task means of a one-inner-step outer pass (shapes for d features)."""

    g_out: np.ndarray           # (d,)   mean_i g'_i
    cross: np.ndarray           # (d, d) mean_i g'_i g_i^T
    h: np.ndarray | None        # (d,)   mean_i S_i P g'_i, or None when P was not given
    loss: float                 # mean outer loss


def numpy_one_step_sums(X_in, y_in, X_out, y_out, theta, M, P=None, q=0.0, *,
                        backend: str | None = None) -> OneStepSums:
    """The sums from the batched prediction-gradient kernel (on `backend`, default the one in
    effect) and (N, d) x (d, d) products."""
    N = X_in.shape[0]
    G, _ = kernels.prediction_gradient(X_in, theta, y_in, backend=backend)
    Theta = G @ M
    Theta += theta
    if q:
        Theta += (q * (G @ theta))[:, None] * G
    G_out, loss = kernels.prediction_gradient(X_out, Theta, y_out, backend=backend)
    h = None
    if P is not None:
        h = kernels.prediction_gradient(X_in, G_out @ P, None, backend=backend)[0].mean(axis=0)
    return OneStepSums(G_out.mean(axis=0), (G_out.T @ G) / N, h, float(loss.mean()))


def applies(B, inner_steps: int) -> bool:
    """Whether a method should take the one-step pass: one inner step, and B (d, k') wide enough
    (k' > 2d/3) that (d, d) work per task costs less than the head form's (d, k') products."""
    d, width = B.shape[-2:]
    return inner_steps == 1 and 2 * d < 3 * width


def numba_one_step_sums(X_in, y_in, X_out, y_out, theta, M, P=None, q=0.0) -> OneStepSums:
    """The sums in one fused pass over blocks of tasks (see the module docstring)."""
    arrays = (X_in, y_in, X_out, y_out)
    N, _, d = X_in.shape
    if (N == 0 or d > _MAX_D or X_in.shape[1] == 0 or X_out.shape[1] == 0 or X_in.dtype != X_out.dtype
            or X_in.dtype not in (np.float32, np.float64)
            or not all(a.flags.c_contiguous and a.dtype == X_in.dtype for a in arrays)):
        return numpy_one_step_sums(X_in, y_in, X_out, y_out, theta, M, P, q, backend="numba")
    # imported on first use: importing numba takes a while, and the NumPy path does not need it
    from metarep.compute._compiled import ONE_STEP_BLOCK, one_step_units
    # the work within a task and the block products run in the data's precision (float32 data:
    # single-precision arithmetic and BLAS); the sums across tasks are float64
    as_data = lambda a: np.ascontiguousarray(a, dtype=X_in.dtype)
    groups = min(_GROUPS, (N + ONE_STEP_BLOCK - 1) // ONE_STEP_BLOCK)
    g_out_g, h_g = np.empty((groups, d)), np.empty((groups if P is not None else 0, d))
    cross_g, loss_g = np.empty((groups, d, d)), np.empty(groups)
    threads.run_units(one_step_units, groups, X_in.nbytes + X_out.nbytes >= kernels.PARALLEL_MIN_BYTES,
                      X_in, y_in, X_out, y_out, as_data(theta), as_data(M), as_data(M if P is None else P),
                      P is not None, float(q), X_in.dtype.type(0), g_out_g, cross_g, h_g, loss_g)
    dt = np.result_type(X_in, theta)
    cast = lambda a: (a / N).astype(dt, copy=False)
    h = cast(h_g.sum(axis=0)) if P is not None else None
    return OneStepSums(cast(g_out_g.sum(axis=0)), cast(cross_g.sum(axis=0)), h,
                       float(loss_g.sum() / N))


def one_step_sums(X_in, y_in, X_out, y_out, theta, M, P=None, q=0.0, *, backend: str | None = None
                  ) -> OneStepSums:
    """Task means of the one-inner-step outer pass (module docstring).

    X_in (N, m_in, d), y_in (N, m_in), X_out (N, m_out, d), y_out (N, m_out); theta (d,) the
    shared start; M (d, d) and the scalar q map an inner gradient g to the change of prediction
    vector, M g + q (theta . g) g; P (d, d) = B B^T for the exact-ANIL term h, or None to skip it.
    `backend` ('numba', 'numpy') overrides the kernel backend in effect (`kernels.use`).
    """
    name = kernels.chosen(backend)
    if name == "numba" and kernels.compiled_available():
        return numba_one_step_sums(X_in, y_in, X_out, y_out, theta, M, P, q)
    return numpy_one_step_sums(X_in, y_in, X_out, y_out, theta, M, P, q, backend=name)
