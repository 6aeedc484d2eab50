"""Measures of a learned representation against a known span of true features (NumPy)."""

from __future__ import annotations

import numpy as np


def span_outside(Phi: np.ndarray, S: np.ndarray) -> float:
    """The share of the features' energy outside span(S) on the same inputs:

        sum_j ||(I - P_S) phi_j||^2 / sum_j ||phi_j||^2,

    phi_j the columns of Phi (n, width) (feature j at the n inputs), P_S the orthogonal projector
    on the columns of S (n, r) (the true span's basis at those inputs). Uncentred: the constant
    belongs to S where it is part of the span. 0 for a zero Phi (no energy anywhere)."""
    Q, _ = np.linalg.qr(S)
    resid = Phi - Q @ (Q.T @ Phi)
    total = float(np.einsum("ij,ij->", Phi, Phi))
    return float(np.einsum("ij,ij->", resid, resid)) / total if total > 0 else 0.0
