"""The random-effects (linear mixed) model of multi-task regression, fitted by maximum likelihood
(MATH 8): a full G by L-BFGS on its factor, a G of rank r by EM.

    y_t = X_t theta_t + e_t,   theta_t ~ N(mu, G),   e_t ~ N(0, sigma^2 I),   tasks t = 1..N.

Everything is computed from per-task sufficient statistics (X^T X, X^T y, y^T y, n), batched over
tasks (no loop over tasks). G is carried as a factor L (p, r) with G = L L^T, and each task's
random effect as theta_t = mu + L u_t, u_t ~ N(0, I_r): the posterior of u_t has precision
A_t = I_r + L^T X^T X L / sigma^2 >= I_r, so every solve is well conditioned whether X^T X is
singular (fewer rows than p) or G is (near) singular.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Stats(NamedTuple):
    """Per-task sufficient statistics of N tasks with p features."""

    XtX: np.ndarray  # (N, p, p)
    Xty: np.ndarray  # (N, p)
    yty: np.ndarray  # (N,)
    n: np.ndarray  # (N,) rows per task


class Prior(NamedTuple):
    """theta ~ N(mu, G), noise variance sigma2."""

    mu: np.ndarray  # (p,)
    G: np.ndarray  # (p, p)
    sigma2: float


def task_stats(X: np.ndarray, y: np.ndarray) -> Stats:
    """Stats of X (N, m, p), y (N, m)."""
    XtX = np.swapaxes(X, 1, 2) @ X
    return Stats(XtX, np.einsum("tmp,tm->tp", X, y), np.einsum("tm,tm->t", y, y),
                 np.full(X.shape[0], X.shape[1], dtype=np.int64))


def stacked_stats(tasks) -> Stats:
    """Stats of every row, inner and outer, of metarep.families.tasks.Tasks (N tasks)."""
    return task_stats(np.concatenate([tasks.X_in, tasks.X_out], axis=1),
                      np.concatenate([tasks.y_in, tasks.y_out], axis=1))


def ragged_stats(X: np.ndarray, y: np.ndarray, offsets: np.ndarray) -> Stats:
    """Stats of ragged tasks: rows X (R, p), y (R,), task t at rows offsets[t]:offsets[t+1].
    Row outer products are summed per task in blocks of rows (bounded memory, no task loop)."""
    offsets = np.asarray(offsets, dtype=np.int64)
    N, p = len(offsets) - 1, X.shape[1]
    task = np.repeat(np.arange(N), np.diff(offsets))
    XtX = np.zeros((N, p, p))
    block = max(1, 2**22 // max(p * p, 1))
    for start in range(0, len(y), block):
        rows = slice(start, start + block)
        np.add.at(XtX, task[rows], X[rows, :, None] * X[rows, None, :])
    Xty = np.zeros((N, p))
    np.add.at(Xty, task, X * y[:, None])
    return Stats(XtX, Xty, np.bincount(task, weights=y * y, minlength=N), np.diff(offsets))


def project(stats: Stats, B: np.ndarray) -> Stats:
    """Stats of the features X B (B (p, k)): B^T X^T X B and B^T X^T y."""
    return Stats(np.swapaxes(B, 0, 1) @ stats.XtX @ B, stats.Xty @ B, stats.yty, stats.n)


def factor(G: np.ndarray, rank: int | None = None) -> np.ndarray:
    """L (p, r) with L L^T = the best rank-r PSD approximation of G (negative eigenvalues
    clipped to 0; r = p when rank is None)."""
    vals, vecs = np.linalg.eigh((G + G.T) / 2)
    vals, vecs = vals[::-1], vecs[:, ::-1]
    r = len(vals) if rank is None else rank
    return vecs[:, :r] * np.sqrt(np.clip(vals[:r], 0, None))


class _Posterior(NamedTuple):
    """Per-task posterior of u_t: mean u (N, r), covariance V (N, r, r); the log-likelihood."""

    u: np.ndarray
    V: np.ndarray
    loglik: float


def _posterior(stats: Stats, mu: np.ndarray, L: np.ndarray, sigma2: float) -> _Posterior:
    """E-step. With r_t = y_t - X_t mu and b_t = L^T X_t^T r_t:
    A_t = I + L^T S_t L / sigma2, u_t = A_t^{-1} b_t / sigma2, V_t = A_t^{-1}, and
    log p(y_t) = -1/2 [n log(2 pi sigma2) + log|A_t| + (r^T r - b_t^T u_t) / sigma2]
    (Woodbury and the determinant lemma on sigma2 I + X L L^T X^T)."""
    N, p = stats.Xty.shape
    r = L.shape[1]
    SL = (stats.XtX.reshape(N * p, p) @ L).reshape(N, p, r)
    LtSL = (L.T @ SL.transpose(1, 0, 2).reshape(p, N * r)).reshape(r, N, r).transpose(1, 0, 2)
    A = np.eye(r) + LtSL / sigma2
    Smu = stats.XtX @ mu
    rr = stats.yty - 2 * stats.Xty @ mu + Smu @ mu
    b = (stats.Xty - Smu) @ L
    C = np.linalg.cholesky(A)
    V = np.linalg.solve(A, np.broadcast_to(np.eye(r), A.shape))
    u = np.einsum("tij,tj->ti", V, b) / sigma2
    logdet = 2 * np.log(np.diagonal(C, axis1=1, axis2=2)).sum(axis=1)
    quad = (rr - np.einsum("ti,ti->t", b, u)) / sigma2
    loglik = -0.5 * float(np.sum(stats.n * np.log(2 * np.pi * sigma2) + logdet + quad))
    return _Posterior(u, V, loglik)


def _sigma2(stats: Stats, theta: np.ndarray, trace_SV: np.ndarray) -> float:
    """sigma2 = sum_t E||y_t - X_t theta_t||^2 / sum_t n_t, with E over theta_t's posterior:
    y^T y - 2 theta^T X^T y + theta^T S theta + tr(S V_theta); trace_SV = tr(S V_theta) (N,)."""
    sse = (stats.yty - 2 * np.einsum("tp,tp->t", theta, stats.Xty)
           + np.einsum("tp,tp->t", np.einsum("tpq,tq->tp", stats.XtX, theta), theta) + trace_SV)
    return max(float(sse.sum() / stats.n.sum()), _sigma2_floor(stats))


def _sigma2_floor(stats: Stats) -> float:
    """1e-10 of the mean y^2 (noiseless data): A_t = I + L^T S_t L / sigma2 stays finite."""
    return 1e-10 * float(stats.yty.sum() / stats.n.sum()) + 1e-300


def _m_step_rank(stats: Stats, mu, L, sigma2, post: _Posterior):
    """Rank r: Lambda = [mu, L] (p, r+1) minimises sum_t E||y_t - X_t Lambda (1, u_t)||^2:
    sum_t S_t Lambda M_t = sum_t X_t^T y_t (1, u_t)^T with M_t = E[(1, u)(1, u)^T], one linear
    system of size p (r+1) (built by one (p^2, N) x (N, (r+1)^2) product)."""
    N, p = stats.Xty.shape
    r = L.shape[1]
    Eu = np.concatenate([np.ones((N, 1)), post.u], axis=1)
    M = Eu[:, :, None] * Eu[:, None, :]
    M[:, 1:, 1:] += post.V
    K = (stats.XtX.reshape(N, p * p).T @ M.reshape(N, -1)).reshape(p, p, r + 1, r + 1)
    K = K.transpose(0, 2, 1, 3).reshape(p * (r + 1), p * (r + 1))
    rhs = (stats.Xty.T @ Eu).reshape(-1)
    Lam = _sym_solve(K, rhs).reshape(p, r + 1)
    mu_new, L_new = Lam[:, 0], Lam[:, 1:]
    theta = mu_new + post.u @ L_new.T
    SL = stats.XtX @ L_new
    sigma2 = _sigma2(stats, theta, np.einsum("tpi,tij,pj->t", SL, post.V, L_new))
    return mu_new, L_new, sigma2


def _sym_solve(K: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    try:
        return np.linalg.solve(K, rhs)
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(K, rhs, rcond=None)[0]


def _initial(stats: Stats, rank: int | None):
    """mu: pooled least squares; sigma2 and G: the pooled residual variance split in halves,
    G along the top directions of the per-task residual gradients X_t^T r_t."""
    p = stats.Xty.shape[1]
    mu = _sym_solve(stats.XtX.sum(axis=0) + 1e-10 * np.eye(p), stats.Xty.sum(axis=0))
    n = stats.n.sum()
    Xr = stats.Xty - stats.XtX @ mu
    rss = stats.yty.sum() - 2 * stats.Xty.sum(axis=0) @ mu + mu @ stats.XtX.sum(axis=0) @ mu
    var = max(float(rss) / n, 2 * _sigma2_floor(stats))
    scale = var / 2 / max(float(np.trace(stats.XtX.sum(axis=0))) / n, 1e-12)
    if rank is None:
        return mu, np.sqrt(scale) * np.eye(p), var / 2
    _, vecs = np.linalg.eigh(Xr.T @ Xr)
    return mu, np.sqrt(scale * p / rank) * vecs[:, ::-1][:, :rank], var / 2


def _em_map(stats: Stats, rank: int):
    """One EM step (rank r) as a map on x = (mu, G, log sigma2): x -> (F(x), loglik(x))."""
    def step(x: _Params) -> tuple[_Params, float]:
        L = factor(x.G, rank)
        sigma2 = float(np.exp(x.log_sigma2))
        post = _posterior(stats, x.mu, L, sigma2)
        mu, L, sigma2 = _m_step_rank(stats, x.mu, L, sigma2, post)
        return _Params(mu, L @ L.T, np.log(sigma2)), post.loglik

    return step


class _Params(NamedTuple):
    mu: np.ndarray
    G: np.ndarray
    log_sigma2: float

    def vector(self) -> np.ndarray:
        return np.concatenate([self.mu, self.G.ravel(), [self.log_sigma2]])

    @classmethod
    def of(cls, v: np.ndarray, p: int) -> _Params:
        G = v[p:p + p * p].reshape(p, p)
        return cls(v[:p], (G + G.T) / 2, float(v[-1]))


def fit_prior(stats: Stats, *, rank: int | None = None, method: str = "em", max_iter: int = 100,
              tol: float = 1e-9) -> Prior:
    """Maximum-likelihood (mu, G, sigma2) of the random-effects model (MATH 8).

    rank None: G full (p, p), by L-BFGS on its factor L (G = L L^T; EM would crawl toward a G
    of lower rank, as the paper's is); rank r: G = L L^T with L (p, r), by EM accelerated by
    SQUAREM (Varadhan and Roland 2008). Both never lose likelihood. method "em" (the name kept
    for maximum likelihood, whichever algorithm) is the only one: REML is not implemented.
    Stops when an iteration gains less than tol * (1 + |loglik|) in log-likelihood (L-BFGS:
    twice running), or after max_iter.
    """
    if method != "em":
        raise ValueError(f"fit_prior: method must be 'em', got {method!r}")
    p = stats.Xty.shape[1]
    if rank is not None and not 1 <= rank <= p:
        raise ValueError(f"fit_prior: rank must be between 1 and p = {p}, got {rank}")
    mu, L, sigma2 = _initial(stats, rank)
    if rank is None:
        return _quasi_newton(stats, mu, L, sigma2, max_iter=max_iter, tol=tol)
    x = _accelerated_em(stats, rank, _Params(mu, L @ L.T, np.log(sigma2)), max_iter, tol)
    L = factor(x.G, rank)
    return Prior(x.mu, L @ L.T, float(np.exp(x.log_sigma2)))


def _accelerated_em(stats: Stats, rank: int, x: _Params, max_iter: int, tol: float) -> _Params:
    """SQUAREM iterations from x (the SqS3 step, kept when it gains on two EM steps)."""
    p = stats.Xty.shape[1]
    F = _em_map(stats, rank)
    x1, ll = F(x)
    for _ in range(max_iter):
        x2, ll1 = F(x1)
        extrapolated = _squarem(x, x1, x2, p, np.log(_sigma2_floor(stats)))
        try:
            after, ll_ext = F(extrapolated)
        except np.linalg.LinAlgError:  # extrapolated past the models: the plain EM steps
            ll_ext = -np.inf
        previous = ll
        if ll_ext >= ll1:
            x, x1, ll = extrapolated, after, ll_ext
        else:  # the extrapolation lost likelihood (or is not a model): the plain EM steps
            x, (x1, ll) = x2, F(x2)
        if ll - previous <= tol * (1 + abs(ll)):
            break
    return x1


def _root(stats: Stats) -> np.ndarray:
    """R (N, q, p) with S_t = R_t^T R_t, q = min(p, max n_t) (S_t has rank <= n_t): the scaled
    top eigenvectors of each S_t, in blocks of tasks."""
    N, p = stats.Xty.shape
    q = int(min(p, stats.n.max()))
    R = np.empty((N, q, p))
    block = max(1, 2**21 // (p * p))
    for start in range(0, N, block):
        vals, vecs = np.linalg.eigh(stats.XtX[start:start + block])
        R[start:start + block] = (np.sqrt(np.clip(vals[:, ::-1][:, :q], 0, None))[:, :, None]
                                  * np.swapaxes(vecs[:, :, ::-1][:, :, :q], 1, 2))
    return R


def _objective(stats: Stats, R: np.ndarray, mu: np.ndarray, L: np.ndarray, sigma2: float,
               block: int | None = None):
    """The log-likelihood and its gradient in (mu, L (p, r), log sigma2), by Fisher's identity
    (the posterior mean of the complete-data gradient of log p(y_t | u_t), theta_t = mu + L u_t).
    With c_t = X_t^T r_t, b_t = L^T c_t, A_t, u_t, V_t as in _posterior, M_t = u_t u_t^T + V_t:
    d/dmu = sum_t (c_t - S_t L u_t) / sigma2, d/dL = sum_t (c_t u_t^T - S_t L M_t) / sigma2,
    d/dlog sigma2 = -n / 2 + sum_t E||r_t - X_t L u_t||^2 / (2 sigma2),
    E||r - X L u||^2 = r^T r - 2 b^T u + tr(L^T S L M).
    In the q-space of R (S_t = R_t^T R_t, `_root`), P_t = R_t L (q, r), K_t = I + P_t P_t^T / sigma2:
    |A_t| = |K_t|, u_t = (b_t - P_t^T K_t^{-1} P_t b_t / sigma2) / sigma2 and S_t L V_t =
    R_t^T K_t^{-1} P_t (Woodbury, push-through): one solve K_t^{-1} P_t per task, V_t never formed.
    Tasks in blocks of `block` (bounded memory). Returns (loglik, (p,), (p, r), scalar)."""
    N, p = stats.Xty.shape
    q, r = R.shape[1], L.shape[1]
    block = block or max(1, 2**21 // (p * max(p, r)))
    ll, g_mu, g_L, sse = 0.0, np.zeros(p), np.zeros((p, r)), 0.0
    for start in range(0, N, block):
        rows = slice(start, start + block)
        XtX, Rb = stats.XtX[rows], R[rows]
        P = (Rb.reshape(-1, p) @ L).reshape(-1, q, r)
        K = P @ np.swapaxes(P, 1, 2) / sigma2 + np.eye(q)
        c = stats.Xty[rows] - XtX @ mu
        b = c @ L
        Z = np.linalg.solve(K, P)  # K^{-1} P
        u = (b - np.einsum("tqi,tq->ti", P, np.einsum("tqi,ti->tq", Z, b)) / sigma2) / sigma2
        W = Rb.reshape(-1, p).T @ Z.reshape(-1, r)  # sum_t S_t L V_t
        Pu = np.einsum("tqi,ti->tq", P, u)
        SLu = np.einsum("tqp,tq->tp", Rb, Pu)
        logdet = 2 * np.log(np.diagonal(np.linalg.cholesky(K), axis1=1, axis2=2)).sum()
        rr = stats.yty[rows] - 2 * stats.Xty[rows] @ mu + np.einsum("tp,p->t", XtX @ mu, mu)
        ll -= 0.5 * float(stats.n[rows].sum() * np.log(2 * np.pi * sigma2) + logdet
                          + (rr.sum() - np.sum(b * u)) / sigma2)
        g_mu += (c - SLu).sum(axis=0) / sigma2
        g_L += ((c - SLu).T @ u - W) / sigma2
        sse += float(rr.sum() - 2 * np.sum(b * u) + np.sum(L * W) + np.sum(Pu * Pu))
    return ll, g_mu, g_L, -stats.n.sum() / 2 + sse / (2 * sigma2)


def _quasi_newton(stats: Stats, mu, L, sigma2, *, max_iter: int, tol: float, memory: int = 10) -> Prior:
    """L-BFGS ascent of the log-likelihood in x = (mu, L (p, p), log sigma2) (log sigma2 kept
    above its floor): a direction that G lacks is a regular quadratic maximum at L_j = 0 in the
    factor, not the boundary that EM crawls to. Backtracking (Armijo) line search: every step
    gains likelihood. Stops when an iteration gains less than tol (1 + |loglik|) twice running."""
    p, floor, R = len(mu), np.log(_sigma2_floor(stats)), _root(stats)

    def evaluate(x):
        ll, g_mu, g_L, g_s = _objective(stats, R, x[:p], x[p:-1].reshape(p, p), float(np.exp(max(x[-1], floor))))
        return ll, np.concatenate([g_mu, g_L.ravel(), [g_s]])

    x = np.concatenate([mu, L.ravel(), [np.log(sigma2)]])
    ll, g = evaluate(x)
    S: list[np.ndarray] = []
    Y: list[np.ndarray] = []
    small = 0
    for _ in range(max_iter):
        d = _two_loop(g, S, Y)
        if d @ g <= 0:
            S, Y, d = [], [], g / np.linalg.norm(g)
        for step in 4.0 ** -np.arange(40):
            ll_new, g_new = evaluate(x + step * d)
            if ll_new >= ll + 1e-4 * step * (d @ g):
                break
        else:
            break
        s_k, y_k = step * d, g - g_new
        if s_k @ y_k > 1e-12 * np.linalg.norm(s_k) * np.linalg.norm(y_k):
            S, Y = [*S, s_k][-memory:], [*Y, y_k][-memory:]
        small = small + 1 if ll_new - ll <= tol * (1 + abs(ll_new)) else 0
        x, ll, g = x + s_k, ll_new, g_new
        if small == 2:
            break
    L = x[p:-1].reshape(p, p)
    return Prior(x[:p], L @ L.T, float(np.exp(max(x[-1], floor))))


def _two_loop(g: np.ndarray, S: list, Y: list) -> np.ndarray:
    """The L-BFGS ascent direction H g (H the inverse of minus the Hessian, from the pairs
    s = x_{k+1} - x_k, y = g_k - g_{k+1}; H = (s^T y / y^T y) I without pairs: the gradient,
    scaled to a unit step)."""
    q, alphas = g.copy(), []
    for s_k, y_k in zip(reversed(S), reversed(Y), strict=True):
        a = (s_k @ q) / (y_k @ s_k)
        alphas.append(a)
        q -= a * y_k
    q *= (S[-1] @ Y[-1]) / (Y[-1] @ Y[-1]) if S else 1 / max(float(np.linalg.norm(g)), 1e-300)
    for s_k, y_k, a in zip(S, Y, reversed(alphas), strict=True):
        q += (a - (y_k @ q) / (y_k @ s_k)) * s_k
    return q


def _squarem(x0: _Params, x1: _Params, x2: _Params, p: int, log_floor: float) -> _Params:
    """The SqS3 extrapolation x0 - 2 a r + a^2 v, r = x1 - x0, v = x2 - 2 x1 + x0,
    a = -|r| / |v| (at most -1; a = -1 gives x2); log sigma2 kept above log_floor."""
    v0, v1, v2 = x0.vector(), x1.vector(), x2.vector()
    r, v = v1 - v0, v2 - 2 * v1 + v0
    norm_v = float(np.linalg.norm(v))
    alpha = min(-float(np.linalg.norm(r)) / norm_v, -1.0) if norm_v > 0 else -1.0
    x = _Params.of(v0 - 2 * alpha * r + alpha * alpha * v, p)
    return x._replace(log_sigma2=max(x.log_sigma2, log_floor))


def loglik(prior: Prior, stats: Stats) -> float:
    """The marginal log-likelihood sum_t log N(y_t; X_t mu, X_t G X_t^T + sigma2 I)."""
    return _posterior(stats, prior.mu, factor(prior.G), prior.sigma2).loglik


def posterior_mean(prior: Prior, X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The BLUP of theta for tasks X (T, m, p), y (T, m): (T, p).

    mu + G X^T (X G X^T + sigma2 I)^{-1} (y - X mu), an (m, m) solve per task; when m > p the
    same in the p-space (Woodbury, G = L L^T): mu + L A^{-1} L^T X^T (y - X mu) / sigma2 with
    A = I + L^T X^T X L / sigma2.
    """
    T, m, p = X.shape
    r = y - X @ prior.mu
    if m > p:
        L = factor(prior.G)
        stats = task_stats(X, y)
        post = _posterior(stats, prior.mu, L, prior.sigma2)
        return prior.mu + post.u @ L.T
    XG = X @ prior.G
    K = XG @ np.swapaxes(X, 1, 2) + prior.sigma2 * np.eye(m)
    try:
        sol = np.linalg.solve(K, r[..., None])[..., 0]
    except np.linalg.LinAlgError:
        sol = np.einsum("tij,tj->ti", np.linalg.pinv(K, hermitian=True), r)
    return prior.mu + np.einsum("tmp,tm->tp", XG, sol)
