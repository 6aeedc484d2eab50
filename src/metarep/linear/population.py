"""Infinite-task (population) dynamics of FO-ANIL, exact, no sampling (MATH 4).

All functions accept leading batch axes on B (..., d, k') and w (..., k'), and on alpha and
1/m_in (shape (...)), so many seeds or hyper-parameter points advance in one call.
A step costs O(d k'^2), independent of the number of tasks.

The step of one run is written once, in `metarep.linear.population_formula.run_step`; every call,
one run or a batch, flattens its batch axes to one and runs that function over the runs:
compiled by numba when it is installed (blocks of runs taken by `threads.count()` threads for
batches of at least PARALLEL_MIN_RUNS runs, `threads.run_units`), as plain NumPy otherwise.
The kernel backend (METAREP_KERNEL, `kernels.use`) plays no part: population runs are
identical under both. Inputs are broadcast to their common batch shape, and each output keeps
the batch shape of the inputs it depends on (grad w does not depend on m_in). The kernel returns
the gradient: the outer optimizer (`metarep.optimizers`) makes the step.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from metarep.compute import kernels, threads
from metarep.linear.params import Params
from metarep.linear.population_formula import run_step


def inverse_m(m_in) -> np.ndarray:
    """1/m_in with m_in = inf (or the string "inf") giving 0."""
    if isinstance(m_in, str):
        m_in = float(m_in)
    return 1.0 / np.asarray(m_in, dtype=np.float64)


# ----------------------------------------------------------------------------------------
# Constants of a problem
# ----------------------------------------------------------------------------------------

class _Consts(NamedTuple):
    """The problem's arrays and numbers in the order `run_step` takes them."""

    Bs: np.ndarray        # B* (d, k)
    mu: np.ndarray        # mu* (k,)
    Sig: np.ndarray       # Sigma* (k, k)
    M: np.ndarray         # M* = Sigma* + mu* mu*^T (k, k)
    b: np.ndarray         # B* mu* (d,)
    BsM: np.ndarray       # B* M* (d, k)
    tr_sig: float         # tr Sigma*
    tr_m: float           # tr M*
    s2: float             # sigma^2


_CONSTS: dict[bytes, _Consts] = {}
_CONSTS_MAX = 32


def _consts(problem) -> _Consts:
    """Problem constants, cached by the problem's content (so they can never go stale)."""
    Bs, mu, Sig = problem.B_star, problem.mu_star, problem.Sigma_star
    s2 = float(problem.noise_std) ** 2
    key = b"".join((repr((Bs.shape, Bs.dtype.str, mu.shape, Sig.shape, s2)).encode(),
                    Bs.tobytes(), mu.tobytes(), Sig.tobytes()))
    found = _CONSTS.get(key)
    if found is not None:
        return found
    Bs = np.array(Bs, dtype=np.float64, order="C")
    mu = np.array(mu, dtype=np.float64, order="C")
    Sig = np.array(Sig, dtype=np.float64, order="C")
    M = Sig + np.outer(mu, mu)
    found = _Consts(Bs=Bs, mu=mu, Sig=Sig, M=M, b=Bs @ mu, BsM=np.ascontiguousarray(Bs @ M),
                    tr_sig=float(np.trace(Sig)), tr_m=float(np.trace(M)), s2=s2)
    if len(_CONSTS) >= _CONSTS_MAX:
        _CONSTS.pop(next(iter(_CONSTS)))
    _CONSTS[key] = found
    return found


# ----------------------------------------------------------------------------------------
# Running the step over a batch of runs
# ----------------------------------------------------------------------------------------

# Batches of at least this many runs are spread over threads (measured: docs/performance.md).
PARALLEL_MIN_RUNS = 16


_HAVE_NUMBA = kernels.compiled_available()


def _run(B, w, alpha, inv_m, K: _Consts):
    """`run_step` over runs stacked on one leading axis: B (S, d, k'), w (S, k'), alpha, inv_m
    (S,). Returns (gradient B, w, loss)."""
    S = B.shape[0]
    out_B = np.empty(B.shape)
    out_w = np.empty(w.shape)
    loss = np.empty(S)
    if _HAVE_NUMBA:
        from metarep.compute._compiled import RUN_BLOCK, population_units
        threads.run_units(population_units, -(-S // RUN_BLOCK), S >= PARALLEL_MIN_RUNS, B, w, alpha, inv_m,
                          *K, out_B, out_w, loss)
    else:
        for s in range(S):
            loss[s] = run_step(B[s], w[s], alpha[s], inv_m[s], *K, out_B[s], out_w[s])
    return out_B, out_w, loss


def _flat(a, full: tuple, S: int, core: tuple) -> np.ndarray:
    """`a` broadcast to the batch shape `full` and flattened to (S, *core): a view of `a` when
    it already has that shape, else a copy; always C-contiguous, writeable float64 (so the
    compiled kernel sees one array type and compiles once)."""
    if a.shape == full + core or (S == 1 and a.shape == core):
        a = a.reshape((S,) + core)
    else:
        a = np.broadcast_to(a, full + core).reshape((S,) + core)
    if a.dtype != np.float64 or not a.flags.c_contiguous or not a.flags.writeable:
        a = np.array(a, dtype=np.float64, order="C")
    return a


def _unbroadcast(a, full: tuple, target: tuple, core: int):
    """A result computed on the full batch shape, cut to the batch shape it really depends on."""
    if target == full:
        return a
    lead = len(full) - len(target)
    index = tuple(0 if i < lead else (slice(None) if target[i - lead] == f else slice(0, 1))
                  for i, f in enumerate(full))
    return a[index + (slice(None),) * core].copy()


def _gradient_one(B, w, alpha: float, inv_m: float, K: _Consts):
    """`run_step` for one run without batch axes (the common case, kept short)."""
    B = np.ascontiguousarray(B, dtype=np.float64)
    w = np.ascontiguousarray(w, dtype=np.float64)
    out_B, out_w = np.empty_like(B), np.empty_like(w)
    step = run_step
    if _HAVE_NUMBA:
        from metarep.compute._compiled import population_run as step
    loss = step(B, w, alpha, inv_m, *K, out_B, out_w)
    return out_B, out_w, loss


def _gradient(params: Params, problem, alpha, m_in):
    """The gradient and loss with the broadcast batch shape of all inputs, and that shape."""
    B, w = params
    inv_m = inverse_m(m_in)
    if np.ndim(B) == 2 and np.ndim(w) == 1 and np.ndim(alpha) == 0 and inv_m.ndim == 0:
        return _gradient_one(B, w, float(alpha), float(inv_m), _consts(problem)), ()
    B = np.asarray(B, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    alpha = np.asarray(alpha, dtype=np.float64)
    full = np.broadcast_shapes(B.shape[:-2], w.shape[:-1], alpha.shape, inv_m.shape)
    S = math.prod(full)
    d, kp = B.shape[-2:]
    nB, nw, loss = _run(_flat(B, full, S, (d, kp)), _flat(w, full, S, (kp,)), _flat(alpha, full, S, ()),
                        _flat(inv_m, full, S, ()), _consts(problem))
    return (nB.reshape(full + (d, kp)), nw.reshape(full + (kp,)), loss.reshape(full)), full


def step_flops(d: int, k: int, width: int) -> int:
    """Floating-point operations of one population step of one run (2 per multiply-add), as
    `population_formula.run_step` computes it: dominated by B^T B and B E[w_i w_i^T],
    2 d k'^2 multiply-adds."""
    kp = width
    fma = 2 * d * kp * kp + 2 * d * k * kp + (k + 7) * kp * kp + 2 * k * k * kp + 4 * d * kp
    return 2 * fma


def fo_anil_population_gradient(params: Params, problem, *, alpha, m_in):
    """Expected FO-ANIL outer gradient over infinitely many tasks (MATH 4).

    grad_w = B^T (B E[w_i] - B* mu*); grad_B = B E[w_i w_i^T] - B* E[w*_i w_i^T].
    The loss is the expected outer loss E[(x^T B w_i - y)^2] / 2 (shape (...), a float unbatched).
    """
    (grad_B, grad_w, loss), full = _gradient(params, problem, alpha, m_in)
    if not full:
        return Params(grad_B, grad_w), float(loss)
    bB, bw = np.shape(params.B)[:-2], np.shape(params.w)[:-1]
    shape_w = np.broadcast_shapes(bB, bw, np.shape(alpha))
    grad_w = _unbroadcast(grad_w, full, shape_w, 1)
    if not loss.shape:
        loss = float(loss)
    return Params(grad_B, grad_w), loss


def population_step(params: Params, problem, *, alpha, beta, m_in) -> tuple[Params, np.ndarray | float]:
    """One exact infinite-task FO-ANIL step of gradient descent (`fo_anil_population_gradient`,
    then theta - beta grad as `metarep.optimizers.gd` makes it; the engine applies the configured
    optimizer itself); beta may be batched like alpha. The loss has the batch shape of B, w, alpha
    and m_in (a float unbatched)."""
    grads, loss = fo_anil_population_gradient(params, problem, alpha=alpha, m_in=m_in)
    beta = np.asarray(beta, dtype=np.float64) if np.ndim(beta) else float(beta)
    return Params(params.B - _per_run(beta, 2) * grads.B, params.w - _per_run(beta, 1) * grads.w), loss


def _per_run(beta, core: int):
    return beta if np.ndim(beta) == 0 else beta.reshape(beta.shape + (1,) * core)
