"""What the theory predicts: the limit Lambda* and the Lemma 2 decay (MATH 5)."""

from __future__ import annotations

import numpy as np

from metarep.linear.population import inverse_m


def lambda_star(Sigma_star: np.ndarray, noise_std: float, alpha: float, m_in) -> np.ndarray:
    """Predicted limit of Lambda_t = B*^T B_t B_t^T B*, (k, k):

    (1/alpha) Sigma* [ (1 + 1/m_in) Sigma* + (tr Sigma* + sigma^2) / m_in I_k ]^{-1}.
    """
    inv_m = float(inverse_m(m_in))
    k = Sigma_star.shape[0]
    inner = (1 + inv_m) * Sigma_star + (np.trace(Sigma_star) + noise_std**2) * inv_m * np.eye(k)
    return np.linalg.solve(inner.T, Sigma_star.T).T / alpha


def lemma2_rate(alpha: float, beta: float, noise_std: float, m_in) -> float:
    """c = alpha^2 beta sigma^2 / m_in, the contraction constant of Lemma 2 (0 for m_in = inf)."""
    return float(alpha**2 * beta * noise_std**2 * inverse_m(m_in))


def lemma2_perp_sq(steps: np.ndarray, perp_sq_0: float, alpha: float, beta: float,
                   noise_std: float, m_in) -> np.ndarray:
    """The Lemma 2 bound on ||D_t||_2^2 iterated: x_{t+1} = (1 - c x_t) x_t from x_0 = perp_sq_0.

    Evaluated in closed form by its continuous envelope x_0 / (1 + c x_0 t), which tends to
    m_in / (alpha^2 beta sigma^2 t).
    """
    c = lemma2_rate(alpha, beta, noise_std, m_in)
    steps = np.asarray(steps, dtype=np.float64)
    return perp_sq_0 / (1.0 + c * perp_sq_0 * steps)


def lemma2_asymptote(steps: np.ndarray, alpha: float, beta: float, noise_std: float, m_in) -> np.ndarray:
    """m_in / (alpha^2 beta sigma^2 t), the rate at which ||D_t||_2^2 decays (inf for m_in = inf)."""
    c = lemma2_rate(alpha, beta, noise_std, m_in)
    with np.errstate(divide="ignore"):
        return 1.0 / (c * np.asarray(steps, dtype=np.float64))
