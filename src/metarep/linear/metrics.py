"""What is tracked during training: how much of B* is learned and of B*_perp unlearned (MATH 5).

Each function takes B (..., d, k') (and w (..., k')) and the problem; leading axes are batches.
"""

from __future__ import annotations

import numpy as np

from metarep.methods.base import shared_head


def align_singular_values(B, B_star) -> np.ndarray:
    """Singular values of B*^T B, (..., min(k, k'))."""
    return np.linalg.svd(B_star.T @ B, compute_uv=False)


def perp_norm(B, B_star) -> np.ndarray:
    """||P_perp B||_2 with P_perp = I - B* B*^T, never formed."""
    return np.linalg.norm(B - B_star @ (B_star.T @ B), ord=2, axis=(-2, -1))


def mean_norm(B, w, B_star, mu_star) -> np.ndarray:
    """||B w - B* mu*||_2."""
    return np.linalg.norm(np.einsum("...dk,...k->...d", B, w) - B_star @ mu_star, axis=-1)


def lambda_matrix(B, B_star) -> np.ndarray:
    """Lambda = B*^T B B^T B*, (..., k, k)."""
    C = B_star.T @ B
    return C @ np.swapaxes(C, -1, -2)


def lambda_rel_err(B, B_star, lam_star) -> np.ndarray:
    """||Lambda - Lambda*||_2 / ||Lambda*||_2 (spectral norms)."""
    diff = lambda_matrix(B, B_star) - lam_star
    return np.linalg.norm(diff, ord=2, axis=(-2, -1)) / np.linalg.norm(lam_star, ord=2)


def track(params, problem, lam_star) -> dict[str, np.ndarray]:
    """All tracked quantities for one (or a batch of) parameter sets.

    Keys: align_norm, sigma_min, perp_norm, mean_norm, lambda_rel_err, singular_values (..., k').
    """
    B = params.B
    align = align_singular_values(B, problem.B_star)
    return {
        "align_norm": align[..., 0],
        "sigma_min": align[..., -1] if B.shape[-1] >= problem.k else np.zeros(align.shape[:-1]),
        "perp_norm": perp_norm(B, problem.B_star),
        "mean_norm": mean_norm(B, shared_head(params), problem.B_star, problem.mu_star),
        "lambda_rel_err": lambda_rel_err(B, problem.B_star, lam_star),
        "singular_values": np.linalg.svd(B, compute_uv=False),
    }


def numerical_rank(singular_values: np.ndarray, rel_tol: float = 1e-2) -> np.ndarray:
    """Number of singular values above rel_tol times the largest one."""
    sv = np.asarray(singular_values)
    return (sv > rel_tol * sv[..., :1]).sum(axis=-1)
