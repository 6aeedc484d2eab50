"""Burer-Monteiro multi-task learning: one representation, one head per task (MATH 3, 'Baselines').

Objective (heads penalised per task, i.e. the head term is averaged over tasks like the losses):

    F(B, W) = (1/N) sum_i [ L(B, w_i; all m_in + m_out samples of task i) + lam/2 |w_i|^2 ]
              + lam/2 ||B||_F^2.

MATH 3 writes the head penalty as lam/2 sum_i |w_i|^2 next to an averaged loss; that weights each
head's penalty N times more than its own data, so the strength of the regularisation would
depend on the number of tasks. Averaging keeps each head's problem a ridge regression with
penalty lam whatever N is; the MATH form is recovered with lam_heads = N lam.

The state is Params(B (d, k'), W (N, k')): W has a task axis, so the method needs a fixed
set of tasks (the finite-task regime); `init` tiles the model's initial head over the tasks.

`gradient` returns dF/dB for B and N dF/dw_i = B^T g_i + lam w_i for the heads: the gradient
of F in the inner product that averages over tasks, as F does. Gradient descent with step beta
then moves B and every head at the same rate, whatever N is ("gd"). The "alternating" solver
replaces the head step by the exact minimisation over the heads (a batched ridge solve, or the
minimum-norm least-squares head when lam = 0) followed by a gradient step on B.
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from metarep.linear import adapt
from metarep.linear.params import Params
from metarep.linear.primitives import prediction_gradient, predictions
from metarep.methods.base import Method

SOLVERS = ("gd", "alternating")


class Hyper(BaseModel):
    """[method] keys of burer-monteiro."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lam: Annotated[float, Field(ge=0, allow_inf_nan=False, strict=True)] = 0.0
    """ridge strength on B and on every head"""
    solver: Literal["gd", "alternating"] = "gd"
    """"gd": gradient steps on B and the heads; "alternating": exact head solves, then a step on B"""


def _check(params: Params, tasks) -> None:
    if params.w.ndim != 2 or params.w.shape[0] != tasks.n_tasks:
        raise ValueError(f"burer-monteiro keeps one head per training task: expected heads of shape "
                         f"({tasks.n_tasks}, {params.B.shape[1]}), got {params.w.shape} "
                         f"(initialise with burer_monteiro.METHOD.init and train on a fixed set of tasks)")


def _pooled_gradient(B: np.ndarray, W: np.ndarray, tasks) -> tuple[np.ndarray, np.ndarray]:
    """Per-task prediction gradients and losses on all m_in + m_out samples: (N, d), (N,)."""
    theta = predictions(B, W)
    m_in, m_out = tasks.m_in, tasks.m_out
    G, loss = prediction_gradient(tasks.X_in, theta, tasks.y_in)
    if m_out == 0:
        return G, loss
    G_out, loss_out = prediction_gradient(tasks.X_out, theta, tasks.y_out)
    m = m_in + m_out
    return (m_in * G + m_out * G_out) / m, (m_in * loss + m_out * loss_out) / m


def _penalty(B, W, lam: float) -> float:
    return 0.5 * lam * (float(np.sum(B * B)) + float(np.sum(W * W)) / W.shape[0])


def bm_objective(params: Params, tasks, *, lam: float = 0.0) -> float:
    """F(B, W) of the module docstring."""
    _check(params, tasks)
    _, loss = _pooled_gradient(params.B, params.w, tasks)
    return float(loss.mean()) + _penalty(params.B, params.w, lam)


def bm_gradient(params: Params, tasks, *, lam: float = 0.0) -> tuple[Params, float]:
    """(Params(dF/dB, N dF/dW), F): grad_B = (1/N) sum_i g_i w_i^T + lam B,
    grad_W[i] = B^T g_i + lam w_i, g_i the prediction gradient on all samples of task i."""
    _check(params, tasks)
    B, W = params
    G, loss = _pooled_gradient(B, W, tasks)
    grad_B = G.T @ W / tasks.n_tasks + lam * B
    grad_W = G @ B + lam * W
    return Params(grad_B, grad_W), float(loss.mean()) + _penalty(B, W, lam)


def training_task_heads(B: np.ndarray, tasks, *, lam: float) -> np.ndarray:
    """argmin_w L(B, w; all samples of task i) + lam/2 |w|^2 for every task: (N, k'), by the same
    batched solve as a test-time ridge head (minimum-norm least squares when lam = 0)."""
    F = np.concatenate([tasks.X_in @ B, tasks.X_out @ B], axis=1)   # features only: no copy of X
    y = np.concatenate([tasks.y_in, tasks.y_out], axis=1)
    return adapt.feature_ridge_heads(F, y, ridge=lam)


def bm_step(params: Params, tasks, *, lam: float = 0.0, solver: str = "gd") -> tuple[Params, Params, float]:
    """(the point the outer update starts from, the gradient it follows, F there). "gd": (B, W)
    and bm_gradient, F at the old point. "alternating": W <- training_task_heads(B) first, then
    the gradient in B at the new heads (the heads' is zero: they stay solved), F after the head
    solve (a small enough B step then lowers F further)."""
    if solver == "gd":
        grads, value = bm_gradient(params, tasks, lam=lam)
        return params, grads, value
    if solver == "alternating":
        _check(params, tasks)
        B = params.B
        W = training_task_heads(B, tasks, lam=lam).astype(params.w.dtype, copy=False)
        grads, value = bm_gradient(Params(B, W), tasks, lam=lam)
        return Params(B, W), Params(grads.B, np.zeros_like(W)), value
    raise ValueError(f"method.solver must be one of {', '.join(SOLVERS)}, got {solver!r}")


def bm_init(params: Params, tasks) -> Params:
    """Turn the model's (B, w) into the state (B, W): every task starts from the head w."""
    return Params(params.B, np.tile(params.w, (tasks.n_tasks, 1)))


METHOD = Method(
    name="burer-monteiro",
    summary="multi-task learning: shared B, one head per task, gradient descent or alternating head solves",
    adapts="nothing (heads fitted per task on all samples; new tasks fit a head on X B)",
    default_adapt="lstsq",
    Hyper=Hyper,
    relative_cost=1.3,
    gradient=bm_gradient,
    step=bm_step,
    init=bm_init,
    cost="gd: O(N m d + N d k'); alternating: O(N m d k' + N m k'^2 + N k'^3)",
)
