"""PyTorch contenders: a per-task autograd loop and torch.func (grad of the task-mean of vmap).

Thread count is left at the library default (no ``torch.set_num_threads``);
nothing global is changed.
"""

from __future__ import annotations

import numpy as np

from ._common import as_dtype, check_method, check_shapes, missing


def _import_torch(contender: str):
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - depends on environment
        raise missing("torch", contender, "pip install torch==2.13.0") from exc
    return torch


def _torch_dtype(torch, dt: np.dtype):
    return torch.float64 if dt == np.float64 else torch.float32


def _to_numpy(t) -> np.ndarray:
    return t.detach().cpu().numpy()


def make_torch_loop(X_in, y_in, X_out, y_out, alpha, method, dtype):
    """Per-task loop with torch.autograd.grad (create_graph=True for exact ANIL)."""
    torch = _import_torch("torch_loop")
    first_order = check_method(method)
    dt = as_dtype(dtype)
    N, _, _, _ = check_shapes(X_in, y_in, X_out, y_out)
    tdt = _torch_dtype(torch, dt)
    X_in, y_in, X_out, y_out = (torch.as_tensor(np.asarray(a), dtype=tdt)
                                for a in (X_in, y_in, X_out, y_out))

    def mse(B, w, X, y):
        return 0.5 * torch.mean((X @ (B @ w) - y) ** 2)

    def step(B, w):
        B = torch.tensor(np.asarray(B), dtype=tdt, requires_grad=True)
        w = torch.tensor(np.asarray(w), dtype=tdt, requires_grad=True)
        meta_loss = 0.0
        for i in range(N):
            inner = mse(B, w, X_in[i], y_in[i])
            # first order: the inner gradient is taken without a graph, so it
            # enters the adapted head as a constant (detached)
            (gw,) = torch.autograd.grad(inner, w, create_graph=not first_order)
            w_i = w - alpha * gw
            meta_loss = meta_loss + mse(B, w_i, X_out[i], y_out[i])
        meta_loss = meta_loss / N
        grad_B, grad_w = torch.autograd.grad(meta_loss, (B, w))
        return _to_numpy(grad_B), _to_numpy(grad_w), _to_numpy(meta_loss)

    return step


def make_torch_func(X_in, y_in, X_out, y_out, alpha, method, dtype):
    """torch.func: grad_and_value of the task-mean of vmap(per-task meta-loss) over tasks.

    The meta-loss is averaged over tasks inside the differentiated function, so autodiff sums
    the task gradients as it goes. (Differentiating per task, vmap(grad(...)), and averaging
    afterwards materialises an (N, d, k') array of per-task gradients of B and is many times
    slower.) First order: the inner gradient is detached, so w_i is a constant of B and
    d w_i / d w = I.
    """
    torch = _import_torch("torch_func")
    from torch.func import grad, grad_and_value, vmap

    first_order = check_method(method)
    dt = as_dtype(dtype)
    check_shapes(X_in, y_in, X_out, y_out)
    tdt = _torch_dtype(torch, dt)
    X_in, y_in, X_out, y_out = (torch.as_tensor(np.asarray(a), dtype=tdt)
                                for a in (X_in, y_in, X_out, y_out))

    def mse(B, w, X, y):
        return 0.5 * torch.mean((X @ (B @ w) - y) ** 2)

    def task_meta_loss(B, w, Xi, yi, Xo, yo):
        gw = grad(mse, argnums=1)(B, w, Xi, yi)
        if first_order:
            gw = gw.detach()
        return mse(B, w - alpha * gw, Xo, yo)

    def meta_loss(B, w, Xi, yi, Xo, yo):
        return vmap(task_meta_loss, in_dims=(None, None, 0, 0, 0, 0))(B, w, Xi, yi, Xo, yo).mean()

    meta_grad = grad_and_value(meta_loss, argnums=(0, 1))

    def step(B, w):
        B = torch.as_tensor(np.asarray(B), dtype=tdt)
        w = torch.as_tensor(np.asarray(w), dtype=tdt)
        (gB, gw), loss = meta_grad(B, w, X_in, y_in, X_out, y_out)
        return _to_numpy(gB), _to_numpy(gw), _to_numpy(loss)

    return step
