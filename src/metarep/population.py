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
them against a direct transcription). With the numba kernel backend (see `metarep.kernels`;
METAREP_KERNEL=numpy turns it off) a compiled kernel advances the runs, in parallel for
batches of at least `_NUMBA_MIN_BATCH` runs; otherwise NumPy does, with stacked products for
batches. Inputs are broadcast to their common batch shape, and each output keeps the batch
shape of the inputs it depends on (new w does not depend on m_in, the loss not on beta).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from metarep.kernels import recycled_empty
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
    BsT: np.ndarray       # B*^T, contiguous (k, d)
    mu: np.ndarray        # mu* (k,)
    Sig: np.ndarray       # Sigma* (k, k)
    M: np.ndarray         # M* = Sigma* + mu* mu*^T (k, k)
    b: np.ndarray         # B* mu* (d,)
    BsM: np.ndarray       # B* M* (d, k)
    Y: np.ndarray         # [B* mu*, B* M*] (d, k + 1)
    C0: np.ndarray        # Sigma* in the top-left corner of a (k + 2, k + 2) zero matrix
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
    k = mu.shape[0]
    b, BsM = Bs @ mu, np.ascontiguousarray(Bs @ M)
    C0 = np.zeros((k + 2, k + 2))
    C0[:k, :k] = Sig
    found = _Consts(Bs=Bs, BsT=np.ascontiguousarray(Bs.T), mu=mu, Sig=Sig, M=M, b=b, BsM=BsM,
                    Y=np.ascontiguousarray(np.concatenate((b[:, None], BsM), axis=1)), C0=C0,
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
    k = K.mu.shape[0]
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
    # second = Z C Z^T + a^2 c B^T B with Z = [B^T B*, E[w_i], e] and C = diag(a^2 (1 + 1/m) Sigma*, 1, a^2/m)
    Z = np.concatenate((BtBs, mean[:, None], e[:, None]), axis=1)
    C = K.C0 * (a2 * (1.0 + inv_m))
    C[k, k] = 1.0
    C[k + 1, k + 1] = a2 * inv_m
    second = Z @ (C @ Z.T)
    second += (a2 * c) * BtB
    grad_w = BtB @ mean - g
    risk = (float(np.vdot(BtB, second)) - 2.0 * float(shrunk @ g)
            - 2.0 * alpha * float(np.vdot(K.M, BtBs.T @ BtBs)) + K.tr_m)
    loss = 0.5 * (risk + K.s2)
    # B* E[w*_i w_i^T] = [B* mu*, B* M*] [shrunk; alpha (B^T B*)^T]
    R = np.concatenate((shrunk[None, :], alpha * BtBs.T))
    BBB = B @ second
    BBB -= K.Y @ R
    if beta is None:
        return BBB, grad_w, loss
    BBB *= -beta
    BBB += B
    grad_w *= -beta
    grad_w += w
    return BBB, grad_w, loss


def _step_stack(B, w, alpha, inv_m, K: _Consts, beta):
    """Runs stacked on one leading axis: B (S, d, k'), w (S, k'), alpha, inv_m, beta (S,).

    The large (S, k', k') and (S, d, k') arrays come from the recycling pool of
    `metarep.kernels`, so a loop of steps does not page-fault fresh memory every step.
    """
    S, d, kp = B.shape
    k = K.mu.shape[0]
    Bt = _t(B)
    BtB = np.matmul(Bt, B, out=recycled_empty((S, kp, kp)))
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
    Z = np.concatenate((BtBs, mean[:, :, None], e[:, :, None]), axis=2)
    C = K.C0 * (a2 * (1.0 + inv_m))[:, None, None]
    C[:, k, k] = 1.0
    C[:, k + 1, k + 1] = a2 * inv_m
    second = np.matmul(Z, C @ _t(Z), out=recycled_empty((S, kp, kp)))
    tmp = np.multiply(BtB, (a2 * c)[:, None, None], out=recycled_empty((S, kp, kp)))
    second += tmp
    del tmp
    grad_w = (BtB @ mean[:, :, None])[:, :, 0] - g
    risk = (np.einsum("sij,sij->s", BtB, second) - 2.0 * np.einsum("si,si->s", shrunk, g)
            - 2.0 * alpha * np.einsum("ij,sij->s", K.M, _t(BtBs) @ BtBs) + K.tr_m)
    loss = 0.5 * (risk + K.s2)
    R = np.concatenate((shrunk[:, None, :], a[:, :, None] * _t(BtBs)), axis=1)
    BBB = np.matmul(B, second, out=recycled_empty((S, d, kp)))
    del second
    BBB -= np.matmul(K.Y, R, out=recycled_empty((S, d, kp)))
    if beta is None:
        return BBB, grad_w, loss
    BBB *= -beta[:, None, None]
    BBB += B
    grad_w *= -beta[:, None]
    grad_w += w
    return BBB, grad_w, loss


_numba_steps: dict = {}

# With the numba backend, batches at least this large run on the parallel kernel, smaller
# ones (and single runs) on the same kernel compiled without threads.
_NUMBA_MIN_BATCH = 16


def _build_numba_step(parallel: bool):
    from metarep.kernels import numba_module
    numba = numba_module()
    # the loop over runs: parallel, or plain for one run (the function is the same, and the
    # loop function, a closure variable, keeps the two compiled versions apart in the cache)
    runs = numba.prange if parallel else range

    @numba.njit(parallel=parallel, cache=True, error_model="numpy", nogil=True,
                fastmath={"reassoc", "contract"})
    def step(B, w, alpha, inv_m, beta, has_beta, Bs, BsT, mu, Sig, M, b, BsM, tr_sig, tr_m, s2,
             outB, outw, loss):  # pragma: no cover - compiled
        S, d, kp = B.shape
        k = Bs.shape[1]
        for s in runs(S):
            Bi = B[s]
            wi = w[s]
            a = alpha[s]
            im = inv_m[s]
            a2 = a * a
            BtB = np.dot(Bi.T, Bi)                 # (k', k'), BLAS
            BsTB = np.dot(BsT, Bi)                 # (k, k') = (B^T B*)^T
            Bw = np.dot(Bi, wi)
            g = np.zeros(kp)                       # B^T B* mu*
            for q in range(k):
                for j in range(kp):
                    g[j] += mu[q] * BsTB[q, j]
            BtBw = np.empty(kp)
            for i in range(kp):
                acc = 0.0
                for j in range(kp):
                    acc += BtB[i, j] * wi[j]
                BtBw[i] = acc
            tr_v = 0.0
            for i in range(d):
                ev = Bw[i] - b[i]
                tr_v += ev * ev
            c = (tr_v + (tr_sig + s2)) * im
            e = BtBw - g
            mean = wi - a * e
            shrunk = wi - a * BtBw
            TT = np.zeros((k, kp))                 # (B^T B* Sigma*)^T
            for p in range(k):
                for q in range(k):
                    f = Sig[p, q]
                    for j in range(kp):
                        TT[p, j] += f * BsTB[q, j]
            f_sig = a2 * (1.0 + im)
            f_btb = a2 * c
            second = np.dot(BsTB.T, TT)            # B^T B* Sigma* B*^T B
            risk = 0.0
            for i in range(kp):
                fe = a2 * im * e[i]
                mi = mean[i]
                acc = 0.0
                for j in range(kp):
                    v = f_sig * second[i, j] + f_btb * BtB[i, j] + fe * e[j] + mi * mean[j]
                    second[i, j] = v
                    acc += BtB[i, j] * v
                risk += acc
            mg = 0.0                               # <M*, B*^T B B^T B*>
            for p in range(k):
                for q in range(k):
                    acc = 0.0
                    for j in range(kp):
                        acc += BsTB[p, j] * BsTB[q, j]
                    mg += M[p, q] * acc
            sg = 0.0
            for j in range(kp):
                sg += shrunk[j] * g[j]
            loss[s] = 0.5 * ((risk - 2.0 * sg - 2.0 * a * mg + tr_m) + s2)
            bt = beta[s] if has_beta else 0.0
            for i in range(kp):
                acc = 0.0
                for j in range(kp):
                    acc += BtB[i, j] * mean[j]
                gw = acc - g[i]
                outw[s, i] = wi[i] - bt * gw if has_beta else gw
            P = np.dot(Bi, second)                 # (d, k'), BLAS
            Q = np.dot(BsM, BsTB)                  # B* M* B*^T B
            for i in range(d):
                bi = b[i]
                if has_beta:
                    for j in range(kp):
                        outB[s, i, j] = Bi[i, j] - bt * (P[i, j] - bi * shrunk[j] - a * Q[i, j])
                else:
                    for j in range(kp):
                        outB[s, i, j] = P[i, j] - bi * shrunk[j] - a * Q[i, j]

    return step


def _numba_runner(parallel: bool):
    """The compiled step (parallel over runs, or serial) when the numba backend is active, else None."""
    from metarep import kernels
    if kernels.backend() != "numba":
        return None
    kernel = _numba_steps.get(parallel)
    if kernel is None:
        kernel = _numba_steps[parallel] = _build_numba_step(parallel)

    def run(B, w, alpha, inv_m, K: _Consts, beta):
        S, d, kp = B.shape
        outB = recycled_empty((S, d, kp))
        outw = recycled_empty((S, kp))
        loss = np.empty(S)
        has_beta = beta is not None
        with kernels.launch_lock:
            kernel(B, w, alpha, inv_m, beta if has_beta else alpha, has_beta, K.Bs, K.BsT, K.mu, K.Sig,
                   K.M, K.b, K.BsM, K.tr_sig, K.tr_m, K.s2, outB, outw, loss)
        return outB, outw, loss

    return run


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


def _advance_one(B, w, alpha: float, inv_m: float, K: _Consts, beta: float | None):
    """One run without batch axes: the serial compiled kernel, or NumPy."""
    run = _numba_runner(parallel=False)
    if run is None:
        return _step_one(B, w, alpha, inv_m, K, beta)
    if not (B.flags.c_contiguous and B.flags.writeable):
        B = np.array(B, order="C")
    if not (w.flags.c_contiguous and w.flags.writeable):
        w = np.array(w, order="C")
    hyper = np.array((alpha, inv_m, 0.0 if beta is None else beta))
    nB, nw, loss = run(B.reshape((1,) + B.shape), w.reshape((1,) + w.shape), hyper[0:1], hyper[1:2], K,
                       None if beta is None else hyper[2:3])
    return nB[0], nw[0], float(loss[0])


def _scalar(x) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) or (isinstance(x, np.ndarray) and x.ndim == 0)


def _advance(params: Params, problem, alpha, m_in, beta):
    """Shared body of the gradient (beta None) and the step: results with the original shapes."""
    B, w = params
    B = np.asarray(B, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    K = _consts(problem)
    if (B.ndim == 2 and w.ndim == 1 and _scalar(alpha) and (_scalar(m_in) or isinstance(m_in, str))
            and (beta is None or _scalar(beta))):
        return _advance_one(B, w, float(alpha), float(inverse_m(m_in)), K,
                            None if beta is None else float(beta)), ()
    alpha = np.asarray(alpha, dtype=np.float64)
    inv_m = inverse_m(m_in)
    shapes = [B.shape[:-2], w.shape[:-1], alpha.shape, inv_m.shape]
    if beta is not None:
        beta = np.asarray(beta, dtype=np.float64)
        shapes.append(beta.shape)
    full = np.broadcast_shapes(*shapes)
    if not full:
        return _advance_one(B, w, float(alpha), float(inv_m), K, None if beta is None else float(beta)), full
    S = int(np.prod(full))
    d, kp = B.shape[-2:]
    Bf = _flat(B, full, S, (d, kp))
    wf = _flat(w, full, S, (kp,))
    af = _flat(alpha, full, S, ())
    mf = _flat(inv_m, full, S, ())
    bf = None if beta is None else _flat(beta, full, S, ())
    run = _numba_runner(parallel=S >= _NUMBA_MIN_BATCH) or _step_stack
    out = run(Bf, wf, af, mf, K, bf)
    nB, nw, loss = out
    return (nB.reshape(full + (d, kp)), nw.reshape(full + (kp,)), loss.reshape(full)), full


def step_flops(d: int, k: int, width: int) -> int:
    """Floating-point operations of one population step of one run (2 per multiply-add), as the
    numba kernel computes it: dominated by B^T B and B E[w_i w_i^T], 2 d k'^2 multiply-adds."""
    kp = width
    fma = 2 * d * kp * kp + 2 * d * k * kp + (k + 7) * kp * kp + 2 * k * k * kp + 4 * d * kp
    return 2 * fma


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
