"""Multi-task learning on the network (the Burer-Monteiro analogue): a shared body, one head per
training task, ridge `lam` on the body and the heads (metarep.nonlinear.multitask)."""

from __future__ import annotations

from metarep.methods.base import Method
from metarep.methods.burer_monteiro import Hyper
from metarep.methods.mlp.meta import check_config


def mtl_step(params, tasks, *, net, lam: float = 0.0, solver: str = "gd"):
    """("gd" or "alternating") the point the update starts from, the gradient, the objective."""
    from metarep.nonlinear.multitask import mtl_step as step

    return step(params, tasks, net=net, lam=lam, solver=solver)


def mtl_gradient(params, tasks, *, net, lam: float = 0.0):
    """(dF/dbody and N dF/dW as MLPParams, F)."""
    from metarep.nonlinear.multitask import mtl_gradient as gradient

    return gradient(params, tasks, net=net, lam=lam)


def mtl_init(params, tasks):
    """Every training task starts from the model's initial head."""
    from metarep.nonlinear.multitask import mtl_init as init

    return init(params, tasks)


METHOD = Method(
    name="burer-monteiro",
    arch="mlp",
    summary="multi-task learning on the network: shared body, one head per task, ridge lam",
    adapts="nothing (heads fitted per task on all samples; new tasks fit a head on phi(X))",
    default_adapt="lstsq",
    Hyper=Hyper,
    features="phi(X)",
    check=check_config,
    relative_cost=3.0,
    gradient=mtl_gradient,
    step=mtl_step,
    init=mtl_init,
    cost="gd: O(N m P), P the number of parameters; alternating adds O(N m k'^2 + N k'^3)",
)
