"""Infinite-task (population) dynamics of FO-ANIL, exact, no sampling (MATH 4).

All functions accept leading batch axes on B (..., d, k') and w (..., k'), and on alpha and
1/m_in (shape (...)), so many seeds or hyper-parameter points advance in one call.
A step costs O(d k'^2), independent of the number of tasks.

The step is evaluated in a form with few array operations (a step at d = k' = 50 is a few
tens of microseconds, dominated by two d x k' x k' products). With

    g = B^T B* mu*,   e = B^T E[v] = B^T B w - g,   E[w_i] = w - alpha e,
    c = (tr V + sigma^2) / m_in,   T = B^T B* Sigma* B*^T B,

the second moment of the adapted heads is

    E[w_i w_i^T] = E[w_i] E[w_i]^T + alpha^2 ( e e^T / m_in + (1 + 1/m_in) T + c B^T B ),

and the parts with B* fold into precomputed constants of the problem:

    grad_w = B^T B E[w_i] - g,
    grad_B = B E[w_i w_i^T] - B* mu* (w - alpha B^T B w)^T - alpha (B* M*) (B^T B*)^T,
    risk   = <B^T B, E[w_i w_i^T]> - 2 (w - alpha B^T B w) . g - 2 alpha <M*, B*^T B B^T B*> + tr M*.

These equal the formulas of MATH 4 term by term (tests/test_population_speed_paths.py checks
them against a direct transcription). When numba is installed and the kernel backend is
numba (see `metarep.kernels`), batches of runs are advanced by a compiled kernel that works
on the runs in parallel; otherwise by stacked NumPy products.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from metarep.params import Params


def _t(a):
    return np.swapaxes(a, -1, -2)


def _outer(a, b):
    return a[..., :, None] * b[..., None, :]


def inverse_m(m_in) -> np.ndarray:
    """1/m_in with m_in = inf (or the string "inf") giving 0."""
    if isinstance(m_in, str):
        m_in = float(m_in)
    return 1.0 / np.asarray(m_in, dtype=np.float64)


# ----------------------------------------------------------------------------------------
# Constants of a problem
# ----------------------------------------------------------------------------------------

class _Consts(NamedTuple):
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
    Bs = np.ascontiguousarray(Bs, dtype=np.float64)
    mu = np.ascontiguousarray(mu, dtype=np.float64)
    Sig = np.ascontiguousarray(Sig, dtype=np.float64)
    M = Sig + np.outer(mu, mu)
    found = _Consts(Bs=Bs, mu=mu, Sig=Sig, M=M, b=Bs @ mu, BsM=np.ascontiguousarray(Bs @ M),
                    tr_sig=float(np.trace(Sig)), tr_m=float(np.trace(M)), s2=s2)
    if len(_CONSTS) >= _CONSTS_MAX:
        _CONSTS.pop(next(iter(_CONSTS)))
    _CONSTS[key] = found
    return found


# ----------------------------------------------------------------------------------------
# Head moments (MATH 4), kept in the form the derivation is written in
# ----------------------------------------------------------------------------------------

def fo_anil_head_moments(B, w, problem, alpha, m_in):
    """E[w_i], E[w_i w_i^T] and E[w*_i w_i^T] after one inner step, over tasks and samples.

    Returns mean (..., k'), second (..., k', k'), cross (..., k, k'), and the pieces reused
    by the loss: B^T B* (..., k', k), B^T B (..., k', k').
    """
    alpha = np.asarray(alpha, dtype=np.float64)[..., None]
    inv_m = inverse_m(m_in)[..., None, None]
    K = _consts(problem)
    BtBs = _t(B) @ K.Bs                                    # (..., k', k)
    BtB = _t(B) @ B
    Bt_ev = (BtB @ w[..., None])[..., 0] - BtBs @ K.mu     # B^T E[v], (..., k')
    ev = np.einsum("...dk,...k->...d", B, w) - K.b
    tr_V = np.einsum("...d,...d->...", ev, ev) + K.tr_sig
    BtVB = _outer(Bt_ev, Bt_ev) + BtBs @ K.Sig @ _t(BtBs)
    BtAB = (1 + inv_m) * BtVB + ((tr_V[..., None, None] + K.s2) * inv_m) * BtB
    a1 = alpha[..., None]
    mean = w - alpha * Bt_ev
    second = (_outer(w, w) - a1 * (_outer(w, Bt_ev) + _outer(Bt_ev, w)) + a1**2 * BtAB)
    shrunk = w - alpha * (BtB @ w[..., None])[..., 0]
    cross = _outer(np.broadcast_to(K.mu, shrunk.shape[:-1] + K.mu.shape), shrunk) + a1 * (K.M @ _t(BtBs))
    return mean, second, cross, BtBs, BtB


# ----------------------------------------------------------------------------------------
# The fused step
# ----------------------------------------------------------------------------------------

def _step_one(B, w, alpha: float, inv_m: float, K: _Consts, beta: float | None):
    """One run, no batch axes, scalar hyper-parameters: (grad_B or new B, grad_w or new w, loss)."""
    Bt = B.T
    BtB = Bt @ B
    BtBs = Bt @ K.Bs
    g = BtBs @ K.mu
    BtBw = BtB @ w
    e = BtBw - g
    ev = B @ w - K.b
    c = (float(ev @ ev) + K.tr_sig + K.s2) * inv_m
    a2 = alpha * alpha
    mean = w - alpha * e
    shrunk = w - alpha * BtBw
    second = (a2 * (1.0 + inv_m)) * ((BtBs @ K.Sig) @ BtBs.T)
    second += (a2 * c) * BtB
    if inv_m:
        ea = (a2 * inv_m) * e
        second += ea[:, None] * e
    second += mean[:, None] * mean
    grad_w = BtB @ mean - g
    BBB = B @ second
    BBB -= K.b[:, None] * shrunk
    BBB -= alpha * (K.BsM @ BtBs.T)
    gram = BtBs.T @ BtBs
    risk = (float(np.vdot(BtB, second)) - 2.0 * float(shrunk @ g)
            - 2.0 * alpha * float(np.vdot(K.M, gram)) + K.tr_m)
    loss = 0.5 * (risk + K.s2)
    if beta is None:
        return BBB, grad_w, loss
    BBB *= -beta
    BBB += B
    grad_w *= -beta
    grad_w += w
    return BBB, grad_w, loss


def _step_stack(B, w, alpha, inv_m, K: _Consts, beta):
    """Runs stacked on one leading axis: B (S, d, k'), w (S, k'), alpha, inv_m, beta (S,)."""
    S = B.shape[0]
    Bt = _t(B)
    BtB = Bt @ B                                                  # (S, k', k')
    BtBs = Bt @ K.Bs                                              # (S, k', k)
    g = BtBs @ K.mu                                               # (S, k')
    BtBw = (BtB @ w[:, :, None])[:, :, 0]
    e = BtBw - g
    ev = (B @ w[:, :, None])[:, :, 0] - K.b
    c = (np.einsum("sd,sd->s", ev, ev) + (K.tr_sig + K.s2)) * inv_m
    a = alpha[:, None]
    a2 = alpha * alpha
    mean = w - a * e
    shrunk = w - a * BtBw
    second = (BtBs @ K.Sig) @ _t(BtBs)
    second *= (a2 * (1.0 + inv_m))[:, None, None]
    second += (a2 * c)[:, None, None] * BtB
    ea = (a2 * inv_m)[:, None] * e
    second += ea[:, :, None] * e[:, None, :]
    second += mean[:, :, None] * mean[:, None, :]
    grad_w = (BtB @ mean[:, :, None])[:, :, 0] - g
    BBB = B @ second
    BBB -= K.b[:, None] * shrunk[:, None, :]
    BBB -= a[:, :, None] * (K.BsM @ _t(BtBs))
    gram = _t(BtBs) @ BtBs
    risk = (np.einsum("sij,sij->s", BtB, second) - 2.0 * np.einsum("si,si->s", shrunk, g)
            - 2.0 * alpha * np.einsum("ij,sij->s", K.M, gram) + K.tr_m)
    loss = 0.5 * (risk + K.s2)
    if beta is None:
        return BBB, grad_w, loss
    BBB *= -beta[:, None, None]
    BBB += B
    grad_w *= -beta[:, None]
    grad_w += w
    return BBB, grad_w, loss


def _numba_stack():
    """The compiled batch kernel when the numba backend is active, else None."""
    from metarep import kernels
    if kernels.backend() != "numba":
        return None
    from metarep import _population_numba
    return _population_numba.step_stack


def _unbroadcast(a, full: tuple, target: tuple, core: int):
    """A result computed on the full batch shape, cut to the batch shape it really depends on."""
    if target == full:
        return a
    lead = len(full) - len(target)
    index = tuple(0 if i < lead else (slice(None) if target[i - lead] == f else slice(0, 1))
                  for i, f in enumerate(full))
    return a[index + (slice(None),) * core].copy()


def _advance(params: Params, problem, alpha, m_in, beta):
    """Shared body of the gradient (beta None) and the step: results with the original shapes."""
    B, w = params
    B = np.asarray(B)
    w = np.asarray(w)
    K = _consts(problem)
    alpha = np.asarray(alpha, dtype=np.float64)
    inv_m = inverse_m(m_in)
    batch_B, batch_w = B.shape[:-2], w.shape[:-1]
    shapes = [batch_B, batch_w, alpha.shape, inv_m.shape]
    if beta is not None:
        beta = np.asarray(beta, dtype=np.float64)
        shapes.append(beta.shape)
    full = np.broadcast_shapes(*shapes)
    B = B.astype(np.float64, copy=False)
    w = w.astype(np.float64, copy=False)
    if not full:
        return _step_one(B, w, float(alpha), float(inv_m), K, None if beta is None else float(beta)), full
    S = int(np.prod(full))
    d, kp = B.shape[-2:]
    Bf = np.ascontiguousarray(np.broadcast_to(B, full + (d, kp))).reshape(S, d, kp)
    wf = np.ascontiguousarray(np.broadcast_to(w, full + (kp,))).reshape(S, kp)
    af = np.broadcast_to(alpha, full).reshape(S)
    mf = np.broadcast_to(inv_m, full).reshape(S)
    bf = None if beta is None else np.broadcast_to(beta, full).reshape(S)
    stack = _numba_stack() if S > 1 else None
    if stack is not None:
        out = stack(Bf, wf, np.ascontiguousarray(af), np.ascontiguousarray(mf),
                    None if bf is None else np.ascontiguousarray(bf), K)
    else:
        out = _step_stack(Bf, wf, af, mf, K, bf)
    nB, nw, loss = out
    return (nB.reshape(full + (d, kp)), nw.reshape(full + (kp,)), loss.reshape(full)), full


def fo_anil_population_gradient(params: Params, problem, *, alpha, m_in):
    """Expected FO-ANIL outer gradient over infinitely many tasks (MATH 4).

    grad_w = B^T (B E[w_i] - B* mu*); grad_B = B E[w_i w_i^T] - B* E[w*_i w_i^T].
    The loss is the expected outer loss E[(x^T B w_i - y)^2] / 2 (shape (...), a float unbatched).
    """
    (grad_B, grad_w, loss), full = _advance(params, problem, alpha, m_in, None)
    if not full:
        return Params(grad_B, grad_w), float(loss)
    bB, bw = np.shape(params.B)[:-2], np.shape(params.w)[:-1]
    shape_w = np.broadcast_shapes(bB, bw, np.shape(alpha))
    grad_w = _unbroadcast(grad_w, full, shape_w, 1)
    if not loss.shape:
        loss = float(loss)
    return Params(grad_B, grad_w), loss


def population_step(params: Params, problem, *, alpha, beta, m_in) -> tuple[Params, np.ndarray]:
    """One exact infinite-task FO-ANIL step; beta may be batched like alpha."""
    (B, w, loss), full = _advance(params, problem, alpha, m_in, beta)
    if not full:
        return Params(B, w), float(loss)
    bB, bw = np.shape(params.B)[:-2], np.shape(params.w)[:-1]
    w = _unbroadcast(w, full, np.broadcast_shapes(bB, bw, np.shape(alpha), np.shape(beta)), 1)
    loss = _unbroadcast(loss, full, np.broadcast_shapes(bB, bw, np.shape(alpha), np.shape(inverse_m(m_in))), 0)
    if not loss.shape:
        loss = float(loss)
    return Params(B, w), loss
