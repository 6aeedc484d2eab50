"""The parameters of the two-layer linear model f(x) = x^T B w (MATH 2)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Params(NamedTuple):
    """B: (d, k') representation; w: (k',) shared head, or (N, k') one head per task
    for multi-task learning. Leading batch axes are allowed for population runs."""

    B: np.ndarray
    w: np.ndarray

    def is_finite(self) -> bool:
        return bool(np.isfinite(self.B).all() and np.isfinite(self.w).all())

    def max_abs(self) -> float:
        return float(max(np.abs(self.B).max(initial=0.0), np.abs(self.w).max(initial=0.0)))


def init_params(d: int, width: int, *, init_scale: float, init_head_scale: float,
                rng: np.random.Generator) -> Params:
    """B_0 entries N(0, init_scale^2 / d); w_0 entries N(0, init_head_scale^2 / width) (0 by default)."""
    B = rng.standard_normal((d, width)) * (init_scale / np.sqrt(d))
    w = rng.standard_normal(width) * (init_head_scale / np.sqrt(width))
    return Params(B, w)


def sgd_update(params, grads, beta):
    """The outer-step skeleton shared by every iterative method: theta <- theta - beta grad,
    field by field of any parameter NamedTuple (`grads` has the same fields)."""
    return type(params)(*(p - beta * g for p, g in zip(params, grads, strict=True)))
