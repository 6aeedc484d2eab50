"""Multi-task learning with the network: one shared body, one head per training task (the
Burer-Monteiro objective of MATH 3 with the features X B replaced by phi(X)).

    F(body, W) = (1/N) sum_i [ L(body, w_i; all m_in + m_out samples of task i) + lam/2 |w_i|^2 ]
                 + lam/2 ||body||^2,

||body||^2 the squared Frobenius norms of every body array (weights and biases). As for the
linear model, the heads' gradient is N dF/dw_i = grad_w L_i + lam w_i (the inner product that
averages over tasks, so the body and every head move at the same rate whatever N is).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.func import grad_and_value

from metarep.linear import adapt
from metarep.nonlinear.backend import (
    Net,
    TorchTasks,
    step_threads,
    step_work,
    tensor_params,
    to_host,
    torch_params,
    torch_tasks,
)
from metarep.nonlinear.model import MLPParams, features


def _pooled_loss(body: dict, W: torch.Tensor, tasks: TorchTasks, activation: str) -> torch.Tensor:
    """(1/N) sum_i L(body, w_i; inner and outer samples), the sets weighted by their sizes."""
    m = tasks.X_in.shape[1] + tasks.X_out.shape[1]
    total = torch.zeros((), dtype=W.dtype, device=W.device)
    for X, y in ((tasks.X_in, tasks.y_in), (tasks.X_out, tasks.y_out)):
        if X.shape[1]:
            r = torch.einsum("nmk,nk->nm", features(X, body, activation), W) - y
            total = total + 0.5 * (r * r).sum(dim=1).mean() / m
    return total


def objective(params: dict, tasks: TorchTasks, *, activation: str, lam: float) -> torch.Tensor:
    """F(body, W) of the module docstring; params holds the body and the heads `w` (N, width)."""
    body = {k: v for k, v in params.items() if k != "w"}
    W = params["w"]
    penalty = sum((v * v).sum() for v in body.values()) + (W * W).sum() / W.shape[0]
    return _pooled_loss(body, W, tasks, activation) + 0.5 * lam * penalty


def _check(params: MLPParams, tasks) -> None:
    if params.w.ndim != 2 or params.w.shape[0] != tasks.n_tasks:
        raise ValueError(f"multi-task learning keeps one head per training task: expected heads of shape "
                         f"({tasks.n_tasks}, {params.width}), got {params.w.shape}")


def mtl_gradient(params: MLPParams, tasks, *, net: Net, lam: float = 0.0) -> tuple[MLPParams, float]:
    """(dF/dbody and N dF/dW as MLPParams, F)."""
    _check(params, tasks)
    with step_threads(step_work(params, tasks)):
        tensors = torch_params(params, net)
        g, value = grad_and_value(objective)(tensors, torch_tasks(tasks, net), activation=net.activation, lam=lam)
        g["w"] = g["w"] * params.w.shape[0]
    grads = tensor_params(g, params)
    return (grads if isinstance(params.w, torch.Tensor) else to_host(grads)), float(value)


def ridge_heads(params: MLPParams, tasks, *, net: Net, lam: float) -> np.ndarray:
    """argmin_w L(body, w; all samples of task i) + lam/2 |w|^2 for every task: (N, width), by the
    same batched solve as a test-time ridge head (minimum-norm least squares when lam = 0)."""
    t = torch_tasks(tasks, net)
    body = {k: v for k, v in torch_params(params, net).items() if k != "w"}
    with torch.no_grad():
        F = torch.cat([features(t.X_in, body, net.activation), features(t.X_out, body, net.activation)], dim=1)
        y = torch.cat([t.y_in, t.y_out], dim=1)
    return adapt.feature_ridge_heads(F.cpu().numpy(), y.cpu().numpy(), ridge=lam).astype(np.dtype(net.dtype))


def mtl_step(params: MLPParams, tasks, *, net: Net, lam: float = 0.0,
             solver: str = "gd") -> tuple[MLPParams, MLPParams, float]:
    """(the point the outer update starts from, the gradient it follows, F there). "gd": the
    parameters and mtl_gradient, F at the old point. "alternating": the heads solved exactly
    first, then the gradient in the body (the heads' is zero: they stay solved), F after the
    head solve."""
    if solver == "alternating":
        _check(params, tasks)
        heads = ridge_heads(params, tasks, net=net, lam=lam)
        params = params._replace(w=net.tensor(heads) if isinstance(params.w, torch.Tensor) else heads)
    grads, value = mtl_gradient(params, tasks, net=net, lam=lam)
    if solver == "alternating":
        w = grads.w
        grads = grads._replace(w=torch.zeros_like(w) if isinstance(w, torch.Tensor) else np.zeros_like(w))
    return params, grads, value


def mtl_init(params: MLPParams, tasks) -> MLPParams:
    """Every task starts from the model's initial head."""
    return params._replace(w=np.tile(params.w, (tasks.n_tasks, 1)))
