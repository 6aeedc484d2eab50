"""The meta-learning outer gradients of the network f(x) = w^T phi(x), vectorised over tasks
(MATH 3 with the linear features X B replaced by phi(X)).

Every task i starts from the shared parameters theta = (body, w) and takes s gradient steps of
size alpha on its inner loss L(theta; X_i, y_i) = 1/(2 m_in) ||phi(X_i) w - y_i||^2:

- on the head only (ANIL): phi(X_i) is fixed, w_{t+1} = w_t - alpha F_i^T (F_i w_t - y_i) / m_in,
  F_i = phi(X_i) (one (N m_in, d) x (d, n1) product for all tasks at once, the head steps as
  batched products over the task axis);
- on every layer (MAML): theta_{t+1} = theta_t - alpha grad L(theta_t; X_i, y_i), per-task
  parameters (torch.func.grad under torch.func.vmap over the task axis).

The outer objective is (1/N) sum_i L(theta_i; X'_i, y'_i) at the adapted theta_i, differentiated
by torch.autograd block by block of tasks (`task_blocks`; the blocks only group whole tasks). The
exact methods differentiate it through the inner steps (second order). The first-order methods
take its gradient at the adapted point as the gradient at theta: written
theta_i = theta + stop(theta_i - theta), whose Jacobian with respect to theta is the identity,
so one reverse pass gives (1/N) sum_i grad L(theta_i; X'_i, y'_i).
For the linear network (identity, two layers, no bias) these are MATH 3's four gradients.
"""

from __future__ import annotations

from functools import partial

import torch
from torch.func import grad, vmap

from metarep.nonlinear.backend import (
    Net,
    TorchTasks,
    split,
    step_threads,
    step_work,
    tensor_params,
    to_host,
    torch_params,
    torch_tasks,
)
from metarep.nonlinear.model import MLPParams, features

# Rows (inner and outer samples) per block of tasks on the CPU: a block's features, 8192 x 50
# doubles (3.3 MB) at width 50, stay in cache between the passes that read them and are
# recycled by the allocator instead of page-faulted afresh each step (the paper-setting FO-ANIL
# step at once measured 67-77 ms, in blocks of 8192 rows 36-45 ms, of 2048 rows 48-72 ms).
# On a GPU the tasks are not cut.
BLOCK_ROWS = 1 << 13


def head_loss(w: torch.Tensor, F: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One task's loss on its features F (m, n): ||F w - y||^2 / (2 m)."""
    r = F @ w - y
    return 0.5 * torch.mean(r * r)


def task_loss(params: dict, X: torch.Tensor, y: torch.Tensor, activation: str) -> torch.Tensor:
    """One task's loss L(theta; X, y) for parameters {body..., w}."""
    body, w = split(params)
    return head_loss(w, features(X, body, activation), y)


def adapt_heads(w: torch.Tensor, F: torch.Tensor, y: torch.Tensor, *, alpha: float, steps: int) -> torch.Tensor:
    """The heads (N, n) after `steps` gradient steps from the shared w (n,) on every task's
    features F (N, m, n), targets y (N, m): w_{t+1} = w_t - alpha F_i^T (F_i w_t - y_i) / m.
    The first residuals are one (N m, n) x (n,) product, since every task starts at w."""
    scale = alpha / F.shape[1]
    r = F @ w - y
    W = w - scale * torch.bmm(r.unsqueeze(1), F).squeeze(1)
    for _ in range(steps - 1):
        r = torch.bmm(F, W.unsqueeze(2)).squeeze(2) - y
        W = W - scale * torch.bmm(r.unsqueeze(1), F).squeeze(1)
    return W


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
    """sum_i L(body, w_i; X'_i, y'_i) over the tasks given, with w_i the head adapted on the inner
    set: batched products over the tasks, no per-task function."""
    body, w = split(params)
    with torch.set_grad_enabled(exact):  # first order: no derivative flows through the inner features
        F_in = features(tasks.X_in, body, net.activation)
    W = adapt_heads(w, F_in, tasks.y_in, alpha=alpha, steps=inner_steps)
    if not exact:
        W = _stop(w, W)
    F_out = features(tasks.X_out, body, net.activation)
    r = torch.bmm(F_out, W.unsqueeze(2)).squeeze(2) - tasks.y_out
    return (0.5 / r.shape[1]) * torch.sum(r * r)


def maml_objective(params: dict, tasks: TorchTasks, *, net: Net, alpha: float, inner_steps: int,
                   exact: bool) -> torch.Tensor:
    """sum_i L(theta_i; X'_i, y'_i) over the tasks given, with theta_i every parameter adapted on
    the inner set (torch.func.vmap over the tasks)."""
    adapt = partial(adapt_all, alpha=alpha, steps=inner_steps, activation=net.activation)
    adapted = vmap(adapt, in_dims=(None, 0, 0))(params, tasks.X_in, tasks.y_in)
    if not exact:
        adapted = {k: _stop(params[k], v) for k, v in adapted.items()}
    losses = vmap(partial(task_loss, activation=net.activation))(adapted, tasks.X_out, tasks.y_out)
    return losses.sum()


def task_blocks(tasks: TorchTasks) -> list[slice]:
    """Consecutive blocks of tasks of about BLOCK_ROWS samples each on the CPU, one block on a
    GPU. Fixed by the shapes alone, so the order of every sum is too."""
    N = tasks.n_tasks
    if tasks.X_in.device.type != "cpu":
        return [slice(0, N)]
    size = max(1, BLOCK_ROWS // max(1, tasks.X_in.shape[1] + tasks.X_out.shape[1]))
    return [slice(s, min(s + size, N)) for s in range(0, N, size)]


def outer_gradient(params: dict, tasks: TorchTasks, *, net: Net, alpha: float, inner_steps: int,
                   adapt_body: bool, exact: bool) -> tuple[dict, torch.Tensor]:
    """(gradient of the outer objective (1/N) sum_i L(theta_i; X'_i, y'_i) with respect to every
    parameter, by name; its value), summed block by block of tasks (`task_blocks`)."""
    if int(inner_steps) != inner_steps or inner_steps < 1:
        raise ValueError(f"inner_steps must be an integer >= 1, got {inner_steps}")
    objective = maml_objective if adapt_body else anil_objective
    leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
    total = {k: torch.zeros_like(v) for k, v in leaves.items()}
    value = torch.zeros((), dtype=net.torch_dtype, device=tasks.X_in.device)
    for block in task_blocks(tasks):
        v = objective(leaves, TorchTasks(*(a[block] for a in tasks)), net=net, alpha=alpha,
                      inner_steps=int(inner_steps), exact=exact)
        for t, g in zip(total.values(), torch.autograd.grad(v, list(leaves.values()))):
            t += g
        value += v.detach()
    N = tasks.n_tasks
    return {k: t / N for k, t in total.items()}, value / N


def meta_gradient(params: MLPParams, tasks, *, net: Net, alpha: float, inner_steps: int = 1,
                  adapt_body: bool, exact: bool) -> tuple[MLPParams, float]:
    """`outer_gradient` on the parameters (tensors on the device, or NumPy arrays) and tasks (or
    TorchTasks already on the device): (the gradient as MLPParams of the same shapes, dtype and
    array type, the mean outer loss). On the CPU the
    methods FO-ANIL and ANIL take the compiled pass of `metarep.nonlinear.fused` instead."""
    with step_threads(step_work(params, tasks)):
        grads, loss = outer_gradient(torch_params(params, net), torch_tasks(tasks, net), net=net, alpha=alpha,
                                     inner_steps=inner_steps, adapt_body=adapt_body, exact=exact)
    tensors = tensor_params(grads, params)
    return (tensors if isinstance(params.w, torch.Tensor) else to_host(tensors)), float(loss)
