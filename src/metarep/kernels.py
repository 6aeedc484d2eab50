"""Backends of the batched prediction-gradient kernel (see linear.prediction_gradient)."""

from __future__ import annotations

import numpy as np


def prediction_gradient(X, theta, y=None):
    m = X.shape[1]
    theta = np.asarray(theta)
    pred = X @ theta if theta.ndim == 1 else np.einsum("nmd,nd->nm", X, theta)
    resid = pred if y is None else pred - y
    G = np.einsum("nmd,nm->nd", X, resid) / m
    return G, 0.5 * np.einsum("nm,nm->n", resid, resid) / m
