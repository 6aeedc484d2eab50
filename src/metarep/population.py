"""Infinite-task (population) dynamics of FO-ANIL, exact, no sampling (MATH 4).

All functions accept leading batch axes on B (..., d, k') and w (..., k'), and on alpha and
1/m_in (shape (...)), so many seeds or hyper-parameter points advance in one call.
A step costs O(d k'^2), independent of the number of tasks.
"""

from __future__ import annotations

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


def fo_anil_head_moments(B, w, problem, alpha, m_in):
    """E[w_i], E[w_i w_i^T] and E[w*_i w_i^T] after one inner step, over tasks and samples.

    Returns mean (..., k'), second (..., k', k'), cross (..., k, k'), and the pieces reused
    by the loss: B^T B* (..., k', k).
    """
    alpha = np.asarray(alpha, dtype=np.float64)[..., None]
    inv_m = inverse_m(m_in)[..., None, None]
    mu, Sigma, B_star = problem.mu_star, problem.Sigma_star, problem.B_star
    BtBs = _t(B) @ B_star                                  # (..., k', k)
    BtB = _t(B) @ B
    Bt_ev = (BtB @ w[..., None])[..., 0] - BtBs @ mu       # B^T E[v], (..., k')
    ev_sq = (np.einsum("...dk,...k->...d", B, w) - B_star @ mu)
    tr_V = np.einsum("...d,...d->...", ev_sq, ev_sq) + np.trace(Sigma)
    BtVB = _outer(Bt_ev, Bt_ev) + BtBs @ Sigma @ _t(BtBs)
    BtAB = (1 + inv_m) * BtVB + ((tr_V[..., None, None] + problem.noise_std**2) * inv_m) * BtB
    a1 = alpha[..., None]
    mean = w - alpha * Bt_ev
    second = (_outer(w, w) - a1 * (_outer(w, Bt_ev) + _outer(Bt_ev, w)) + a1**2 * BtAB)
    shrunk = w - alpha * (BtB @ w[..., None])[..., 0]
    cross = _outer(np.broadcast_to(mu, shrunk.shape[:-1] + mu.shape), shrunk) + a1 * (problem.M_star @ _t(BtBs))
    return mean, second, cross, BtBs, BtB


def fo_anil_population_gradient(params: Params, problem, *, alpha, m_in):
    """Expected FO-ANIL outer gradient over infinitely many tasks (MATH 4).

    grad_w = B^T (B E[w_i] - B* mu*); grad_B = B E[w_i w_i^T] - B* E[w*_i w_i^T].
    The loss is the expected outer loss E[(x^T B w_i - y)^2] / 2 (shape (...), a float unbatched).
    """
    B, w = params
    mean, second, cross, BtBs, BtB = fo_anil_head_moments(B, w, problem, alpha, m_in)
    resid_mean = np.einsum("...dk,...k->...d", B, mean) - problem.B_star @ problem.mu_star
    grad_w = np.einsum("...dk,...d->...k", B, resid_mean)
    grad_B = B @ second - problem.B_star @ cross
    risk = (np.einsum("...ij,...ij->...", BtB, second)
            - 2 * np.einsum("...ij,...ji->...", cross, BtBs) + np.trace(problem.M_star))
    loss = 0.5 * (risk + problem.noise_std**2)
    return Params(grad_B, grad_w), (float(loss) if np.ndim(loss) == 0 else loss)


def population_step(params: Params, problem, *, alpha, beta, m_in) -> tuple[Params, np.ndarray]:
    """One exact infinite-task FO-ANIL step; beta may be batched like alpha."""
    grads, loss = fo_anil_population_gradient(params, problem, alpha=alpha, m_in=m_in)
    beta = np.asarray(beta, dtype=np.float64)
    return Params(params.B - beta[..., None, None] * grads.B, params.w - beta[..., None] * grads.w), loss
