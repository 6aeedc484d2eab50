"""Oracle reference point: the true representation B* and head mean mu* (MATH 3, 'Baselines')."""

from __future__ import annotations

import numpy as np

from metarep.linear.params import Params
from metarep.methods.base import Method


def oracle_fit(problem, tasks=None, *, width=None, rng=None) -> Params:
    """Params(B*, mu*): width k, whatever model.width says; the data and rng are not used."""
    return Params(np.array(problem.B_star, dtype=np.float64), np.array(problem.mu_star, dtype=np.float64))


METHOD = Method(
    name="oracle",
    summary="reference: the true representation B* (width k) and head mean mu*",
    adapts="nothing (new tasks: Bayes head on the true features by default)",
    default_adapt="bayes",
    adapt_rules=("gradient", "ridge", "lstsq", "bayes"),
    features="X B*",
    fixed_width=lambda d, k: k,
    needs_truth=True,
    relative_cost=0.0,
    fit=oracle_fit,
    cost="O(d k), no training",
)
