"""The outer optimizer: what turns a method's outer gradient into a step (optax's seam).

An optimizer is plain data: three pure functions and an explicit state.

    state = opt.init(params)
    updates, state = opt.update(grads, state, params)
    params = opt.apply_updates(params, updates)

`params`, `grads` and `updates` are parameter NamedTuples (`Params`, `MLPParams`) of NumPy arrays
or torch tensors; the state is a flat dict of arrays (saved in checkpoints as it is). Methods
return gradients; the training loop (`metarep.engine.loop`) applies the configured optimizer.

- `gd(beta)`: theta <- theta - beta grad, the paper's outer step (no state). beta may hold one
  value per run of a leading batch axis. The update is -beta grad and is added to theta: the same
  numbers to the last bit as theta - beta grad (negation is exact).
- `adam(lr, betas, eps)`: torch.optim's Adam (its functional form, `torch.optim.adam.adam`, the
  code `torch.optim.Adam.step` runs), on NumPy arrays through tensors that share their memory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

OPTIMIZERS = ("gd", "adam")


class Optimizer(NamedTuple):
    """name, and the pure functions init(params) -> state, update(grads, state, params) ->
    (updates, state), apply_updates(params, updates) -> params."""

    name: str
    init: Callable[[Any], dict]
    update: Callable[[Any, dict, Any], tuple[Any, dict]]
    apply_updates: Callable[[Any, Any], Any]


def apply_updates(params, updates):
    """theta + update, field by field."""
    return type(params)(*(p + u for p, u in zip(params, updates, strict=True)))


def _per_run(beta, g):
    """beta as a scalar, or with one value per run along g's leading axes."""
    if np.ndim(beta) == 0:
        return beta
    return np.reshape(beta, np.shape(beta) + (1,) * (g.ndim - np.ndim(beta)))


def gd(beta) -> Optimizer:
    """Gradient descent with step size beta (a float, or an array of one value per run)."""

    def init(params) -> dict:
        return {}

    def update(grads, state, params=None):
        return type(grads)(*(-_per_run(beta, g) * g for g in grads)), state

    return Optimizer("gd", init, update, apply_updates)


def adam(lr: float, *, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> Optimizer:
    """Adam (Kingma and Ba) as torch.optim.Adam computes it (no weight decay, no amsgrad).
    State: count (steps taken) and the moment estimates mu_<field>, nu_<field>."""
    b1, b2 = (float(b) for b in betas)

    def init(params) -> dict:
        zeros = {f"{m}_{f}": _zeros_like(p) for m in ("mu", "nu") for f, p in zip(params._fields, params, strict=True)}
        return {"count": np.zeros((), dtype=np.int64), **zeros}

    def update(grads, state, params=None):
        import torch
        from torch.optim.adam import adam as torch_adam

        fields = grads._fields
        g = [_tensor(x) for x in grads]
        mu = [_tensor(state[f"mu_{f}"]).clone() for f in fields]     # the old state stays as it was
        nu = [_tensor(state[f"nu_{f}"]).clone() for f in fields]
        delta = [torch.zeros_like(x) for x in g]                      # torch's step from 0: the update
        steps = [torch.tensor(float(state["count"])) for _ in fields]
        torch_adam(delta, g, mu, nu, [], steps, foreach=False, capturable=False, differentiable=False, fused=None,
                   grad_scale=None, found_inf=None, has_complex=False, amsgrad=False, beta1=b1, beta2=b2, lr=lr,
                   weight_decay=0.0, eps=eps, maximize=False)
        back = _back_like(grads[0])
        new = {"count": np.asarray(int(state["count"]) + 1, dtype=np.int64),
               **{f"mu_{f}": back(m) for f, m in zip(fields, mu, strict=True)},
               **{f"nu_{f}": back(v) for f, v in zip(fields, nu, strict=True)}}
        return type(grads)(*(back(x) for x in delta)), new

    return Optimizer("adam", init, update, apply_updates)


def _zeros_like(a):
    return a.new_zeros(a.shape) if hasattr(a, "new_zeros") else np.zeros_like(a)


def _tensor(a):
    """A torch tensor: `a` itself, or one sharing the NumPy array's memory."""
    import torch

    return a if isinstance(a, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(a))


def _back_like(example) -> Callable:
    """Results in the array type of `example` (NumPy arrays share the tensors' memory)."""
    if isinstance(example, np.ndarray):
        return lambda t: t.numpy()
    return lambda t: t


def make(name: str, *, beta, adam_betas=(0.9, 0.999), adam_eps: float = 1e-8) -> Optimizer:
    """The optimizer `[train] optimizer` names; beta is the step size (Adam's learning rate)."""
    if name == "gd":
        return gd(beta)
    if name == "adam":
        return adam(float(beta), betas=tuple(adam_betas), eps=adam_eps)
    raise ValueError(f"train.optimizer must be one of {', '.join(OPTIMIZERS)}, got {name!r}")


def from_train(train) -> Optimizer:
    """The optimizer of a [train] table (its optimizer, beta, adam_betas and adam_eps)."""
    return make(train.optimizer, beta=train.beta, adam_betas=train.adam_betas, adam_eps=train.adam_eps)
