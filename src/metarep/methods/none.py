"""No pretraining: the identity representation on the raw d features (MATH 3, 'Baselines')."""

from __future__ import annotations

import numpy as np

from metarep.linear.params import Params
from metarep.methods.base import Method


def no_pretraining_fit(problem, tasks=None, *, width=None, rng=None) -> Params:
    """Params(I_d, 0): width d, whatever model.width says; new tasks are fitted on their own."""
    d = tasks.d if tasks is not None else problem.d
    return Params(np.eye(d), np.zeros(d))


METHOD = Method(
    name="none",
    summary="reference: no pretraining, least squares (or ridge) on the d raw features of the test task",
    adapts="nothing (new tasks fit a head on the raw features)",
    default_adapt="lstsq",
    features="raw x",
    fixed_width=lambda d, k: d,
    relative_cost=0.0,
    fit=no_pretraining_fit,
    cost="O(d^2), no training",
)
