"""Shared primitives of the two-layer linear model f(x) = x^T B w (MATH 2).

Every method is written in terms of one batched kernel, `prediction_gradient`:
for each task n, g_n = X_n^T (X_n theta_n - y_n) / m, the gradient of
L = 1/(2m) ||X_n theta_n - y_n||^2 with respect to the prediction vector theta_n = B w_n.
The gradients of the two layers follow from it: grad_w = B^T g, grad_B = g w^T.
S_n = X_n^T X_n / m is never formed; X_n is applied twice.
"""

from __future__ import annotations

import numpy as np

from metarep.compute import kernels
from metarep.compute.kernels import prediction_gradient_reference

__all__ = ["head_step", "prediction_gradient", "prediction_gradient_reference", "predictions"]


def prediction_gradient(X: np.ndarray, theta: np.ndarray, y: np.ndarray | None = None, *,
                        backend: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-task gradient and loss at the prediction vectors.

    X: (N, m, d); theta: (d,) shared or (N, d) per task; y: (N, m) or None for zeros.
    Returns G (N, d) with G[n] = X_n^T (X_n theta_n - y_n) / m and
    loss (N,) with loss[n] = ||X_n theta_n - y_n||^2 / (2 m).
    With y = None, G[n] = S_n theta_n: the task's second moment applied to a vector.
    `backend` ('numba', 'numpy') overrides the kernel backend in effect (`kernels.use`).
    """
    return kernels.prediction_gradient(X, theta, y, backend=backend)


def head_step(B: np.ndarray, W: np.ndarray, G: np.ndarray, alpha: float) -> np.ndarray:
    """One inner gradient step on the head for every task: W - alpha G B.

    B: (d, k'); W: (k',) or (N, k'); G: (N, d) prediction gradients. Returns (N, k').
    """
    return W - alpha * (G @ B)


def predictions(B: np.ndarray, W: np.ndarray) -> np.ndarray:
    """theta_n = B w_n for heads W (N, k') (or a single (k',)): (N, d)."""
    return W @ B.T
