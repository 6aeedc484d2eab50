"""The meta-learning outer gradients of the network f(x) = w^T phi(x), vectorised over tasks with
torch.func (MATH 3 with the linear features X B replaced by phi(X)).

Every task i starts from the shared parameters theta = (body, w) and takes s gradient steps of
size alpha on its inner loss L(theta; X_i, y_i) = 1/(2 m_in) ||phi(X_i) w - y_i||^2:

- on the head only (ANIL): phi(X_i) is fixed, w_{t+1} = w_t - alpha F_i^T (F_i w_t - y_i) / m_in,
  F_i = phi(X_i) (one (N m_in, d) x (d, n1) product for all tasks at once);
- on every layer (MAML): theta_{t+1} = theta_t - alpha grad L(theta_t; X_i, y_i), per-task
  parameters (torch.func.grad under torch.func.vmap over the task axis).

The outer objective is (1/N) sum_i L(theta_i; X'_i, y'_i) at the adapted theta_i. The exact
methods differentiate it through the inner steps (torch.func.grad of a function that contains
the inner gradients: second order). The first-order methods take its gradient at the adapted
point as the gradient at theta: written theta_i = theta + stop(theta_i - theta), whose Jacobian
with respect to theta is the identity, so one reverse pass gives (1/N) sum_i grad L(theta_i; X'_i, y'_i).
For the linear network (identity, two layers, no bias) these are MATH 3's four gradients.
"""

from __future__ import annotations

from functools import partial

import torch
from torch.func import grad, grad_and_value, vmap

from metarep.nonlinear.backend import (
    Net,
    TorchTasks,
    numpy_params,
    split,
    step_threads,
    step_work,
    torch_params,
    torch_tasks,
)
from metarep.nonlinear.model import MLPParams, features


def head_loss(w: torch.Tensor, F: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One task's loss on its features F (m, n): ||F w - y||^2 / (2 m)."""
    r = F @ w - y
    return 0.5 * torch.mean(r * r)


def task_loss(params: dict, X: torch.Tensor, y: torch.Tensor, activation: str) -> torch.Tensor:
    """One task's loss L(theta; X, y) for parameters {body..., w}."""
    body, w = split(params)
    return head_loss(w, features(X, body, activation), y)


def adapt_head(w: torch.Tensor, F: torch.Tensor, y: torch.Tensor, *, alpha: float, steps: int) -> torch.Tensor:
    """`steps` gradient steps on one task's head from w, features F fixed: (n,)."""
    for _ in range(steps):
        w = w - alpha * grad(head_loss)(w, F, y)
    return w


def adapt_all(params: dict, X: torch.Tensor, y: torch.Tensor, *, alpha: float, steps: int,
              activation: str) -> dict:
    """`steps` gradient steps on every parameter of one task."""
    for _ in range(steps):
        g = grad(task_loss)(params, X, y, activation)
        params = {k: v - alpha * g[k] for k, v in params.items()}
    return params


def _stop(theta: torch.Tensor, adapted: torch.Tensor) -> torch.Tensor:
    """The value of `adapted`, the derivative of `theta` (the first-order approximation)."""
    return theta + (adapted - theta).detach()


def anil_objective(params: dict, tasks: TorchTasks, *, net: Net, alpha: float, inner_steps: int,
                   exact: bool) -> torch.Tensor:
    """(1/N) sum_i L(body, w_i; X'_i, y'_i) with w_i the head adapted on the inner set."""
    body, w = split(params)
    with torch.set_grad_enabled(exact):  # first order: no derivative flows through the inner features
        F_in = features(tasks.X_in, body, net.activation)
    W = vmap(partial(adapt_head, alpha=alpha, steps=inner_steps), in_dims=(None, 0, 0))(w, F_in, tasks.y_in)
    if not exact:
        W = _stop(w, W)
    F_out = features(tasks.X_out, body, net.activation)
    return vmap(head_loss)(W, F_out, tasks.y_out).mean()


def maml_objective(params: dict, tasks: TorchTasks, *, net: Net, alpha: float, inner_steps: int,
                   exact: bool) -> torch.Tensor:
    """(1/N) sum_i L(theta_i; X'_i, y'_i) with theta_i every parameter adapted on the inner set."""
    adapt = partial(adapt_all, alpha=alpha, steps=inner_steps, activation=net.activation)
    adapted = vmap(adapt, in_dims=(None, 0, 0))(params, tasks.X_in, tasks.y_in)
    if not exact:
        adapted = {k: _stop(params[k], v) for k, v in adapted.items()}
    losses = vmap(partial(task_loss, activation=net.activation))(adapted, tasks.X_out, tasks.y_out)
    return losses.mean()


def outer_gradient(params: dict, tasks: TorchTasks, *, net: Net, alpha: float, inner_steps: int,
                   adapt_body: bool, exact: bool) -> tuple[dict, torch.Tensor]:
    """(gradient of the outer objective with respect to every parameter, by name; its value)."""
    if int(inner_steps) != inner_steps or inner_steps < 1:
        raise ValueError(f"inner_steps must be an integer >= 1, got {inner_steps}")
    objective = maml_objective if adapt_body else anil_objective
    fn = partial(objective, tasks=tasks, net=net, alpha=alpha, inner_steps=int(inner_steps), exact=exact)
    return grad_and_value(fn)(params)


def meta_gradient(params: MLPParams, tasks, *, net: Net, alpha: float, inner_steps: int = 1,
                  adapt_body: bool, exact: bool) -> tuple[MLPParams, float]:
    """`outer_gradient` on NumPy parameters and tasks (or TorchTasks already on the device):
    (the gradient as MLPParams of the same shapes and dtype, the mean outer loss)."""
    with step_threads(step_work(params, tasks)):
        grads, loss = outer_gradient(torch_params(params, net), torch_tasks(tasks, net), net=net, alpha=alpha,
                                     inner_steps=inner_steps, adapt_body=adapt_body, exact=exact)
        return numpy_params(grads, params), float(loss)
