"""ANIL with the exact second-order outer gradient (MATH 3, 'ANIL')."""

from __future__ import annotations

from metarep.methods.base import Method
from metarep.methods.inner import meta_gradient
from metarep.params import Params


def anil_gradient(params: Params, tasks, *, alpha: float, inner_steps: int = 1) -> tuple[Params, float]:
    """Exact ANIL outer gradient over N tasks: inner steps on the head only, then the chain rule
    through every inner step (for one step: grad_w = mean (I - alpha B^T S_i B) q_i,
    grad_B = mean g'_i w_i^T - alpha (g_i q_i^T + S_i B q_i w^T), q_i = B^T g'_i).
    Returns (Params(grad_B, grad_w), mean outer loss)."""
    return meta_gradient(params, tasks, alpha=alpha, inner_steps=inner_steps, adapt_B=False, exact=True)


METHOD = Method(
    name="anil",
    summary="ANIL: inner steps on the head, exact second-order outer step on B and w",
    adapts="head",
    hyper=("alpha", "inner_steps"),
    gradient=anil_gradient,
    cost="O(s N m d + s N d k'): 2s + 1 kernel passes over the samples, 2s + 1 (N, d) x (d, k') GEMMs",
)
