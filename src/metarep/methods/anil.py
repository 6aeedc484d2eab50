"""ANIL with the exact second-order outer gradient (MATH 3, 'ANIL')."""

from __future__ import annotations

import numpy as np

from metarep.linear import prediction_gradient
from metarep.methods.base import Method
from metarep.methods.inner import meta_gradient
from metarep.params import Params


def anil_gradient(params: Params, tasks, *, alpha: float, inner_steps: int = 1) -> tuple[Params, float]:
    """Exact ANIL outer gradient over N tasks: inner steps on the head only, then the chain rule
    through every inner step (for one step: grad_w = mean (I - alpha B^T S_i B) q_i,
    grad_B = mean g'_i w_i^T - alpha (g_i q_i^T + S_i B q_i w^T), q_i = B^T g'_i).
    Returns (Params(grad_B, grad_w), mean outer loss)."""
    B = params.B
    if inner_steps == 1 and 2 * B.shape[0] < 3 * B.shape[1]:
        return _one_step_prediction_space(params, tasks, alpha)
    return meta_gradient(params, tasks, alpha=alpha, inner_steps=inner_steps, adapt_B=False, exact=True)


def _one_step_prediction_space(params: Params, tasks, alpha: float) -> tuple[Params, float]:
    """One inner step written with P = B B^T, never forming heads: theta_i = theta - alpha P g_i,
    B q_i = P g'_i, and with C = G'^T G the task sums become
    sum_i g'_i w_i^T - alpha g_i q_i^T = (sum_i g'_i) w^T - alpha (C + C^T) B.
    Three (N, d) x (d, d) products instead of five (N, d) x (d, k') ones: cheaper when k' > 2d/3."""
    B, w = params
    N = tasks.n_tasks
    P = B @ B.T
    theta = B @ w
    G, _ = prediction_gradient(tasks.X_in, theta, tasks.y_in)
    Theta = G @ (-alpha * P)
    Theta += theta
    G_out, loss = prediction_gradient(tasks.X_out, Theta, tasks.y_out)
    H, _ = prediction_gradient(tasks.X_in, G_out @ P, None)         # S_i B q_i
    C = G_out.T @ G
    g_mean, h_mean = G_out.mean(axis=0), H.mean(axis=0)
    grad_B = np.outer(g_mean - alpha * h_mean, w) - (alpha / N) * ((C + C.T) @ B)
    return Params(grad_B, B.T @ (g_mean - alpha * h_mean)), float(loss.mean())


METHOD = Method(
    name="anil",
    summary="ANIL: inner steps on the head, exact second-order outer step on B and w",
    adapts="head",
    hyper=("alpha", "inner_steps"),
    gradient=anil_gradient,
    cost="O(s N m d + s N d k'): 2s + 1 kernel passes over the samples, 2s + 1 (N, d) x (d, k') GEMMs",
)
