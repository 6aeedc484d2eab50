"""No training on the network: the random initial body, a head fitted on its features at test time."""

from __future__ import annotations

from metarep.methods.base import Method
from metarep.methods.mlp.meta import check_config


def untrained_fit(problem, tasks, *, spec, init):
    """(the initial network, its spec): `init(spec)` draws it as every iterative method's start."""
    return init(spec), spec


METHOD = Method(
    name="none",
    arch="mlp",
    summary="reference: the untrained random body; new tasks fit a head on its features",
    adapts="nothing (new tasks fit a head on phi_0(X), the random features)",
    default_adapt="lstsq",
    features="phi_0(X) (random features)",
    check=check_config,
    relative_cost=0.0,
    fit=untrained_fit,
    cost="O(P), no training",
)
