"""ANIL with the exact second-order outer gradient (MATH 3, 'ANIL')."""

from __future__ import annotations

import numpy as np

from metarep.linear import one_step
from metarep.linear.params import Params
from metarep.methods.base import Method
from metarep.methods.inner import meta_gradient


def anil_gradient(params: Params, tasks, *, alpha: float, inner_steps: int = 1) -> tuple[Params, float]:
    """Exact ANIL outer gradient over N tasks: inner steps on the head only, then the chain rule
    through every inner step (for one step: grad_w = mean (I - alpha B^T S_i B) q_i,
    grad_B = mean g'_i w_i^T - alpha (g_i q_i^T + S_i B q_i w^T), q_i = B^T g'_i).
    Returns (Params(grad_B, grad_w), mean outer loss)."""
    B = params.B
    if one_step.applies(B, inner_steps):
        return _one_step_prediction_space(params, tasks, alpha)
    return meta_gradient(params, tasks, alpha=alpha, inner_steps=inner_steps, adapt_B=False, exact=True)


def _one_step_prediction_space(params: Params, tasks, alpha: float) -> tuple[Params, float]:
    """One inner step written with P = B B^T, never forming heads: theta_i = theta - alpha P g_i,
    B q_i = P g'_i, and with C = G'^T G the task sums become
    sum_i g'_i w_i^T - alpha g_i q_i^T = (sum_i g'_i) w^T - alpha (C + C^T) B.
    The task sums come from one pass over the tasks (`one_step.one_step_sums`, with the term
    h = mean_i S_i P g'_i): cheaper than five (N, d) x (d, k') products when k' > 2d/3."""
    B, w = params
    P = B @ B.T
    sums = one_step.one_step_sums(tasks.X_in, tasks.y_in, tasks.X_out, tasks.y_out, B @ w, -alpha * P, P)
    assert sums.h is not None, "one_step_sums computes h when given P"
    g = sums.g_out - alpha * sums.h
    grad_B = np.outer(g, w) - alpha * ((sums.cross + sums.cross.T) @ B)
    return Params(grad_B, B.T @ g), sums.loss


METHOD = Method(
    name="anil",
    summary="ANIL: inner steps on the head, exact second-order outer step on B and w",
    adapts="head",
    train_keys=("alpha", "inner_steps"),
    relative_cost=2.3,
    gradient=anil_gradient,
    cost="O(s N m d + s N d k'): 2s + 1 kernel passes over the samples, 2s + 1 (N, d) x (d, k') GEMMs",
)
