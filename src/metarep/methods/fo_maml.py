"""First-order MAML (MATH 3, 'FO-MAML'); its exact infinite-task form is in fo_maml_population."""

from __future__ import annotations

from metarep.methods.base import Method
from metarep.methods.fo_maml_population import fo_maml_population_gradient
from metarep.methods.inner import meta_gradient
from metarep.params import Params


def fo_maml_gradient(params: Params, tasks, *, alpha: float, inner_steps: int = 1) -> tuple[Params, float]:
    """FO-MAML outer gradient over N tasks: inner steps on both layers
    (B_i <- B_i - alpha g_i w_i^T, w_i <- w_i - alpha B_i^T g_i), then the outer gradient at the
    adapted point taken as the gradient at (B, w): grad_B = mean g'_i w_i^T, grad_w = mean B_i^T g'_i.
    Returns (Params(grad_B, grad_w), mean outer loss)."""
    return meta_gradient(params, tasks, alpha=alpha, inner_steps=inner_steps, adapt_B=True, exact=False)


METHOD = Method(
    name="fo-maml",
    summary="first-order MAML: inner steps on B and w, first-order outer step",
    adapts="representation and head",
    hyper=("alpha", "inner_steps"),
    gradient=fo_maml_gradient,
    population_gradient=fo_maml_population_gradient,
    cost="O(s N m d + s N d k' + s^2 N (d + k')): s + 1 kernel passes over the samples",
)
