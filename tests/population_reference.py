"""The exact infinite-task FO-ANIL step written as MATH 4 states it: the readable reference that
the one fast form (`metarep.linear.population_formula.run_step`, behind `metarep.linear.population`) is
checked against, run by run, with explicit d x d matrices V and A. It is itself checked against
Monte Carlo (tests/test_population.py)."""

from __future__ import annotations

import numpy as np


def math4_one(B, w, problem, alpha, beta, m_in):
    """One run of MATH 4: the moments of the adapted heads, gradient, loss and step."""
    Bs, mu, Sig, s2 = problem.B_star, problem.mu_star, problem.Sigma_star, problem.noise_std**2
    d = B.shape[0]
    M = Sig + np.outer(mu, mu)
    inv_m = 0.0 if np.isinf(m_in) else 1.0 / m_in
    Ev = B @ w - Bs @ mu                                   # E[v], v = B w - B* w*
    V = (np.outer(B @ w, B @ w) - np.outer(B @ w, Bs @ mu) - np.outer(Bs @ mu, B @ w) + Bs @ M @ Bs.T)
    A = (1 + inv_m) * V + (np.trace(V) + s2) * inv_m * np.eye(d)
    mean = w - alpha * B.T @ Ev                             # E[w_i]
    cross = np.outer(mu, w) - alpha * np.outer(mu, w) @ B.T @ B + alpha * M @ Bs.T @ B   # E[w*_i w_i^T]
    second = (np.outer(w, w) - alpha * (np.outer(w, Ev) @ B + B.T @ np.outer(Ev, w))
              + alpha**2 * B.T @ A @ B)                     # E[w_i w_i^T]
    grad_w = B.T @ (B @ mean - Bs @ mu)
    grad_B = B @ second - Bs @ cross
    # E||B w_i - B* w*||^2 = tr(B E[w_i w_i^T] B^T) - 2 tr(B* E[w* w_i^T] B^T) + tr M*
    risk = np.trace(B @ second @ B.T) - 2 * np.trace(Bs @ cross @ B.T) + np.trace(M)
    loss = 0.5 * (risk + s2)
    return {"mean": mean, "second": second, "cross": cross, "grad_B": grad_B, "grad_w": grad_w,
            "loss": loss, "B": B - beta * grad_B, "w": w - beta * grad_w}


def math4(B, w, problem, alpha, beta, m_in):
    """math4_one over the broadcast batch shape of all inputs (m_in may be the string "inf")."""
    alpha, beta = np.asarray(alpha, float), np.asarray(beta, float)
    m = np.asarray(float(m_in) if isinstance(m_in, str) else m_in, float)
    full = np.broadcast_shapes(B.shape[:-2], w.shape[:-1], alpha.shape, beta.shape, m.shape)
    Bf = np.broadcast_to(B, full + B.shape[-2:])
    wf = np.broadcast_to(w, full + w.shape[-1:])
    af, bf, mf = (np.broadcast_to(a, full) for a in (alpha, beta, m))
    out: dict = {}
    for idx in np.ndindex(*full):
        r = math4_one(Bf[idx], wf[idx], problem, af[idx], bf[idx], mf[idx])
        for key, val in r.items():
            out.setdefault(key, np.empty(full + np.shape(val)))[idx] = val
    return out
