"""Test time: fit the head on a new task, and the excess risk that results (MATH 6).

Test tasks come as X (T, m_test, d), y (T, m_test) with true heads w_star (T, k).
Every head fit returns heads (T, k') for the features X B.
"""

from __future__ import annotations

import numpy as np

from metarep.linear.primitives import head_step, prediction_gradient, predictions
from metarep.linear.random_effects import Prior, Stats, fit_prior, posterior_mean, project

ADAPT_RULES = ("gradient", "ridge", "lstsq", "bayes")


def gradient_heads(B, w, X, y, *, alpha: float, steps: int) -> np.ndarray:
    """`steps` gradient steps of size alpha on the head from w, for each test task."""
    W = np.broadcast_to(w, (X.shape[0], B.shape[1])).copy()
    for _ in range(steps):
        G, _ = prediction_gradient(X, predictions(B, W), y)
        W = head_step(B, W, G, alpha)
    return W


def ridge_heads(B, X, y, *, ridge: float) -> np.ndarray:
    """argmin_w 1/(2m) ||X B w - y||^2 + ridge/2 ||w||^2; ridge = 0 gives the minimum-norm
    least-squares head (the pseudo-inverse), well defined when m_test < k'."""
    return feature_ridge_heads(X @ B, y, ridge=ridge)


def feature_ridge_heads(F, y, *, ridge: float) -> np.ndarray:
    """The ridge (or, for ridge = 0, minimum-norm least-squares) head of every task on its
    features F (T, m, k') and labels y (T, m): one batched solve, (T, k')."""
    if ridge == 0:
        return np.einsum("tkm,tm->tk", np.linalg.pinv(F), y)
    m = F.shape[1]
    gram = np.swapaxes(F, 1, 2) @ F / m + ridge * np.eye(F.shape[2])
    rhs = np.einsum("tmk,tm->tk", F, y) / m
    return np.linalg.solve(gram, rhs[..., None])[..., 0]


def bayes_heads(problem, X, y) -> np.ndarray:
    """Posterior mean of w* given (X, y) on the true features X B*: the best any method can do.

    mu* + Sigma* F^T (F Sigma* F^T + sigma^2 I)^{-1} (y - F mu*), F = X B*. Returns (T, k).
    """
    F = X @ problem.B_star
    FS = F @ problem.Sigma_star
    K = FS @ np.swapaxes(F, 1, 2) + problem.noise_std**2 * np.eye(X.shape[1])
    r = y - F @ problem.mu_star
    sol = _psd_solve(K, r)
    return problem.mu_star + np.einsum("tmk,tm->tk", FS, sol)


def _psd_solve(K, r):
    """Solve K x = r for stacked PSD K, falling back to the pseudo-inverse when singular."""
    try:
        return np.linalg.solve(K, r[..., None])[..., 0]
    except np.linalg.LinAlgError:
        return np.einsum("tij,tj->ti", np.linalg.pinv(K, hermitian=True), r)


def excess_risk(B, W, B_star, w_star) -> np.ndarray:
    """||B w_t - B* w*_t||^2 for each test task (isotropic features, MATH 1): (T,)."""
    diff = W @ B.T - w_star @ B_star.T
    return np.einsum("td,td->t", diff, diff)


def expected_excess_risk_one_step(B, w, problem, *, alpha: float, m_test: int) -> float:
    """Closed form of E||B w_test - B* w*||^2 after one head step of size alpha (MATH 6).

    tr(E[u u^T] G) + alpha^2 sigma^2 tr(P^2) / m_test with P = B B^T,
    G = I - 2 alpha P + alpha^2 ((1 + 1/m_test) P^2 + tr(P^2)/m_test I),
    E[u u^T] = (B w - B* mu*)(B w - B* mu*)^T + B* Sigma* B*^T. Computed in the k'-space,
    O(d k'^2): P^2 is never formed.
    """
    Bs = problem.B_star
    e = B @ w - Bs @ problem.mu_star
    BtB = B.T @ B
    tr_P2 = np.sum(BtB * BtB)
    Bte, BtBs = B.T @ e, B.T @ Bs
    # tr(U P) and tr(U P^2) for U = e e^T + B* Sigma* B*^T, through B^T.
    tr_U = e @ e + np.trace(problem.Sigma_star)
    tr_UP = Bte @ Bte + np.sum((BtBs @ problem.Sigma_star) * BtBs)
    tr_UP2 = Bte @ BtB @ Bte + np.sum((BtB @ BtBs @ problem.Sigma_star) * BtBs)
    tr_UG = tr_U - 2 * alpha * tr_UP + alpha**2 * ((1 + 1 / m_test) * tr_UP2 + tr_P2 / m_test * tr_U)
    return float(tr_UG + alpha**2 * problem.noise_std**2 * tr_P2 / m_test)


def empirical_prior(method, params, stats: Stats, **hyper) -> Prior:
    """The empirical-Bayes prior of a new task's head on the features X B: the method's own
    `head_prior(params, stats, **hyper)` where it declares one, else the random-effects model
    (full G) fitted to the training tasks' statistics of X B (`stats` are those of the raw
    inputs X, projected on B)."""
    if method.head_prior is not None:
        return method.head_prior(params, stats, **hyper)
    return fit_prior(project(stats, params.B))


def fit_heads(rule: str, B, w, X, y, *, problem=None, prior: Prior | None = None, alpha: float = 0.0,
              steps: int = 1, ridge: float = 0.0) -> np.ndarray:
    """Dispatch on the adaptation rule ("gradient", "ridge", "lstsq", "bayes"). "bayes" is the
    posterior mean of the head on X B under `prior` (the empirical-Bayes head, MATH 8) or,
    without one, under the true prior of `problem` on X B* (`bayes_heads`)."""
    if rule == "gradient":
        return gradient_heads(B, w, X, y, alpha=alpha, steps=steps)
    if rule == "ridge":
        return ridge_heads(B, X, y, ridge=ridge)
    if rule == "lstsq":
        return ridge_heads(B, X, y, ridge=0.0)
    if rule == "bayes":
        return bayes_heads(problem, X, y) if prior is None else posterior_mean(prior, X @ B, y)
    raise ValueError(f"test.adapt must be one of {', '.join(ADAPT_RULES)}, got {rule!r}")


def summarize(risks: np.ndarray) -> tuple[float, float]:
    """Mean and standard error of per-task risks."""
    risks = np.asarray(risks, dtype=np.float64)
    se = risks.std(ddof=1) / np.sqrt(risks.size) if risks.size > 1 else float("nan")
    return float(risks.mean()), float(se)
