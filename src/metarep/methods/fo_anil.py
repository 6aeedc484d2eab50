"""First-order ANIL, the paper's algorithm (MATH 3, 'FO-ANIL'; population form MATH 4)."""

from __future__ import annotations

import numpy as np

from metarep.linear import head_step, prediction_gradient, predictions
from metarep.methods.base import Method
from metarep.params import Params
from metarep.population import fo_anil_population_gradient


def inner_heads(B, w, X, y, alpha: float, inner_steps: int) -> np.ndarray:
    """Adapt the head on every task's inner set by `inner_steps` gradient steps: (N, k')."""
    W = np.broadcast_to(w, (X.shape[0], w.shape[-1]))
    for _ in range(inner_steps):
        G, _ = prediction_gradient(X, predictions(B, W), y)
        W = head_step(B, W, G, alpha)
    return W


def fo_anil_gradient(params: Params, tasks, *, alpha: float, inner_steps: int = 1):
    """FO-ANIL outer gradient over N tasks.

    w_i = inner-adapted heads; g'_i = X'_i^T (X'_i B w_i - y'_i) / m_out;
    grad_w = B^T mean_i g'_i; grad_B = mean_i g'_i w_i^T. Returns (Params(grad_B, grad_w), outer loss).
    """
    B, w = params
    N = tasks.n_tasks
    W = inner_heads(B, w, tasks.X_in, tasks.y_in, alpha, inner_steps)
    G_out, loss = prediction_gradient(tasks.X_out, predictions(B, W), tasks.y_out)
    return Params(G_out.T @ W / N, B.T @ G_out.mean(axis=0)), float(loss.mean())


METHOD = Method(
    name="fo-anil",
    summary="first-order ANIL: inner steps on the head, first-order outer step on B and w",
    adapts="head",
    hyper=("alpha", "inner_steps"),
    gradient=fo_anil_gradient,
    population_gradient=fo_anil_population_gradient,
    cost="O(N m d + N d k') per inner step",
)
