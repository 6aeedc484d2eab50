"""Oracle on the network: the teacher's own features and head mean."""

from __future__ import annotations

import dataclasses

import numpy as np

from metarep.methods.base import Method
from metarep.methods.mlp.meta import check_config


def teacher_fit(problem, tasks, *, spec, init):
    """(the teacher's network, its spec): two layers, W1 = B*^T (width k), the teacher's activation
    ("identity" for the linear teacher), no bias, w = mu*; phi(x) is then the teacher's features."""
    from metarep.nonlinear.model import MLPParams

    teacher = dataclasses.replace(spec, width=problem.k, layers=2, hidden=None, bias=False,
                                  activation="relu" if problem.teacher == "relu" else "identity")
    params = MLPParams.from_parts({"W1": np.array(problem.B_star.T)}, np.array(problem.mu_star))
    return params, teacher


METHOD = Method(
    name="oracle",
    arch="mlp",
    summary="reference: the teacher's features phi*(x) (width k) and head mean mu*",
    adapts="nothing (new tasks: Bayes head on the teacher's features by default)",
    default_adapt="bayes",
    adapt_rules=("gradient", "ridge", "lstsq", "bayes"),
    features="phi*(X) (the teacher's features)",
    fixed_width=lambda d, k: k,
    needs_truth=True,
    check=check_config,
    relative_cost=0.0,
    fit=teacher_fit,
    cost="O(d k), no training",
)
