"""First-order ANIL, the paper's algorithm (MATH 3, 'FO-ANIL'; population form MATH 4)."""

from __future__ import annotations

import numpy as np

from metarep.linear import one_step
from metarep.linear.params import Params
from metarep.linear.population import fo_anil_population_gradient
from metarep.linear.primitives import prediction_gradient
from metarep.methods.base import Method


def inner_heads(B, w, X, y, alpha: float, inner_steps: int) -> np.ndarray:
    """Adapt the head on every task's inner set by `inner_steps` gradient steps: (N, k').

    The first step starts from the shared head, so its predictions are one vector B w.
    """
    G, _ = prediction_gradient(X, B @ w, y)
    W = G @ (-alpha * B)
    W += w
    for _ in range(inner_steps - 1):
        G, _ = prediction_gradient(X, W @ B.T, y)
        W -= alpha * (G @ B)
    return W


def fo_anil_gradient(params: Params, tasks, *, alpha: float, inner_steps: int = 1):
    """FO-ANIL outer gradient over N tasks.

    w_i = inner-adapted heads; g'_i = X'_i^T (X'_i B w_i - y'_i) / m_out;
    grad_w = B^T mean_i g'_i; grad_B = mean_i g'_i w_i^T. Returns (Params(grad_B, grad_w), outer loss).
    """
    B, w = params
    N = tasks.n_tasks
    if one_step.applies(B, inner_steps):
        return _one_step_prediction_space(B, w, tasks, alpha)
    W = inner_heads(B, w, tasks.X_in, tasks.y_in, alpha, inner_steps)
    G_out, loss = prediction_gradient(tasks.X_out, W @ B.T, tasks.y_out)
    return Params(G_out.T @ W / N, B.T @ G_out.mean(axis=0)), float(loss.mean())


def _one_step_prediction_space(B, w, tasks, alpha):
    """The same gradient for one inner step, never forming the heads: with theta = B w, P = B B^T,
    theta_i = theta - alpha P g_i and sum_i g'_i w_i^T = (sum_i g'_i) w^T - alpha (G'^T G) B.
    The task sums come from one pass over the tasks (`one_step.one_step_sums`): (d, d) work per
    task instead of three (N, d) x (d, k') products, cheaper when k' > 2d/3."""
    sums = one_step.one_step_sums(tasks.X_in, tasks.y_in, tasks.X_out, tasks.y_out, B @ w, -alpha * (B @ B.T))
    grad_B = np.outer(sums.g_out, w) - alpha * (sums.cross @ B)
    return Params(grad_B, B.T @ sums.g_out), sums.loss


METHOD = Method(
    name="fo-anil",
    summary="first-order ANIL: inner steps on the head, first-order outer step on B and w",
    adapts="head",
    train_keys=("alpha", "inner_steps"),
    theory=True,
    population_batched=True,
    gradient=fo_anil_gradient,
    population_gradient=fo_anil_population_gradient,
    cost="O(s N m d + s N d k') per outer step",
)
