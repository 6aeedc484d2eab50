"""MAML with the exact second-order outer gradient (MATH 3, 'MAML')."""

from __future__ import annotations

from metarep.linear.params import Params
from metarep.methods.base import Method
from metarep.methods.inner import meta_gradient


def maml_gradient(params: Params, tasks, *, alpha: float, inner_steps: int = 1) -> tuple[Params, float]:
    """Exact MAML outer gradient over N tasks: inner steps on both layers, then the chain rule
    through every inner step (MATH 3 gives the one-step pull-back). Per-task B_i are never formed.
    Returns (Params(grad_B, grad_w), mean outer loss)."""
    return meta_gradient(params, tasks, alpha=alpha, inner_steps=inner_steps, adapt_B=True, exact=True)


METHOD = Method(
    name="maml",
    summary="MAML: inner steps on B and w, exact second-order outer step",
    adapts="representation and head",
    train_keys=("alpha", "inner_steps"),
    relative_cost=3.5,
    gradient=maml_gradient,
    cost="O(s N m d + s N d k' + s^2 N (d + k')): 2s + 1 kernel passes over the samples",
)
