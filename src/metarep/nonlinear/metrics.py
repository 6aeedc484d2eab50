"""What is tracked while the network trains (NumPy, no torch).

The first layer plays the part of B^T: with B = W1^T the linear model's quantities keep their
names and meaning (align_norm = ||W1 B*||_2, sigma_min, perp_norm = ||W1 (I - B* B*^T)||_2, the
singular values sv_i of W1). The representation phi(x), the head's input, is measured on a fixed
probe set of inputs X (n, d): the eigenvalues of its covariance (phi_ev_i, descending), their
effective rank exp(H(p)) with p_i = ev_i / sum(ev) (Roy and Vetterli's entropy rank: between 1
and the width, the number of equal directions it would take to spread the variance as evenly),
and the R^2 of the best affine prediction of B*^T x from phi(x) (1: the representation keeps all
of the task subspace linearly; 0: none of it).
"""

from __future__ import annotations

import numpy as np

from metarep import metrics
from metarep.families import family_of
from metarep.families.measures import span_outside
from metarep.nonlinear.model import MLPParams, features


def effective_rank(eigenvalues: np.ndarray) -> float:
    """exp of the entropy of the normalised nonnegative spectrum (0 for a zero spectrum)."""
    ev = np.clip(np.asarray(eigenvalues, dtype=np.float64), 0.0, None)
    total = ev.sum()
    if not total > 0:
        return 0.0
    p = ev[ev > 0] / total
    return float(np.exp(-(p * np.log(p)).sum()))


def linear_r2(Phi: np.ndarray, Z: np.ndarray) -> float:
    """1 - ||Z - Zhat||^2 / ||Z - mean Z||^2, Zhat the least-squares affine prediction of
    Z (n, k) from Phi (n, width)."""
    Zc = Z - Z.mean(axis=0)
    Pc = Phi - Phi.mean(axis=0)
    coef, *_ = np.linalg.lstsq(Pc, Zc, rcond=None)
    resid = Zc - Pc @ coef
    return float(1.0 - (resid * resid).sum() / (Zc * Zc).sum())


def representation(params: MLPParams, X_probe: np.ndarray, B_star: np.ndarray, activation: str) -> dict:
    """phi's covariance spectrum (descending), effective rank and R^2 on the probe inputs."""
    Phi = features(X_probe, params.body(), activation)
    ev = np.linalg.eigvalsh(np.cov(Phi, rowvar=False).reshape(Phi.shape[1], Phi.shape[1]))[::-1]
    return {"phi_eigenvalues": ev, "effective_rank": effective_rank(ev),
            "r2": linear_r2(Phi, X_probe @ B_star)}


def track(params: MLPParams, problem, X_probe: np.ndarray, activation: str) -> dict:
    """Keys: align_norm, sigma_min, perp_norm, singular_values (of W1), phi_eigenvalues,
    effective_rank, r2; for a family that tracks its span (metarep.families) instead of B*:
    singular_values, phi_eigenvalues, effective_rank, r2 (of the true features) and span_outside."""
    family = family_of(problem)
    if family.tracks_span:
        return span_track(params, problem, X_probe, activation, family)
    B = params.W1.T
    align = metrics.align_singular_values(B, problem.B_star)
    return {
        "align_norm": float(align[0]),
        "sigma_min": float(align[-1]) if B.shape[1] >= problem.k else 0.0,
        "perp_norm": float(metrics.perp_norm(B, problem.B_star)),
        "singular_values": np.linalg.svd(params.W1, compute_uv=False),
        **representation(params, X_probe, problem.B_star, activation),
    }


def span_track(params: MLPParams, truth, X_probe: np.ndarray, activation: str, family) -> dict:
    """phi's covariance spectrum and effective rank on the probe inputs (the family's grid), the R^2
    of the true features phi*(x) from phi(x) (1: phi keeps the true span), and span_outside: the
    share of phi's energy there outside the family's true span (families.measures.span_outside)."""
    Phi = features(X_probe, params.body(), activation)
    ev = np.linalg.eigvalsh(np.cov(Phi, rowvar=False).reshape(Phi.shape[1], Phi.shape[1]))[::-1]
    return {"singular_values": np.linalg.svd(params.W1, compute_uv=False), "phi_eigenvalues": ev,
            "effective_rank": effective_rank(ev), "r2": linear_r2(Phi, truth.teacher_features(X_probe)),
            "span_outside": span_outside(Phi, family.span(truth, X_probe))}
