"""Pooled regression: one ridge model over the training rows, ignoring which task each came from
(MATH 3, 'Baselines'): the answer to "does knowing the tasks help at all".

theta = argmin_theta 1/(2n) ||X theta - y||^2 + lam/2 ||theta||^2 over the n rows (inner and
outer) of the training tasks it is given (with a table source: one draw of m_in + m_out rows of
every training task, the rows the other direct methods see), i.e.
(X^T X / n + lam I) theta = X^T y / n (minimum-norm least squares when lam = 0).
The state is Params(I_d, theta): width d, the model x^T I theta. New tasks start from theta:
test.adapt = "gradient" with test.adapt_steps = 0 predicts with theta unchanged, more steps
adapt it on the task's m_test rows; "ridge" and "lstsq" fit the task alone, as `none`.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from metarep.linear.params import Params
from metarep.methods.base import Method


class Hyper(BaseModel):
    """[method] keys of pooled."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lam: Annotated[float, Field(ge=0, allow_inf_nan=False, strict=True)] = 1e-3
    """ridge strength of the pooled model"""


def pooled_ridge(X: np.ndarray, y: np.ndarray, *, lam: float) -> np.ndarray:
    """theta for rows X (n, d), y (n,): the module docstring's ridge solution, (d,)."""
    n, d = X.shape
    if lam == 0:
        return np.linalg.lstsq(X, y, rcond=None)[0]
    return np.linalg.solve(X.T @ X / n + lam * np.eye(d), X.T @ y / n)


def pooled_fit(problem, tasks, *, width=None, rng=None, lam: float = 1e-3) -> Params:
    """Params(I_d, theta) with theta the pooled ridge fit on every row of `tasks` (inner and
    outer). `problem`, `width` and `rng` are not used."""
    d = tasks.d
    X = np.concatenate([tasks.X_in.reshape(-1, d), tasks.X_out.reshape(-1, d)])
    y = np.concatenate([tasks.y_in.reshape(-1), tasks.y_out.reshape(-1)])
    return Params(np.eye(d), pooled_ridge(X, y, lam=lam))


METHOD = Method(
    name="pooled",
    summary="reference: one ridge model over the training rows, tasks ignored; new tasks start from it",
    adapts="nothing (new tasks start from the pooled model: gradient steps on it, or none)",
    default_adapt="gradient",
    Hyper=Hyper,
    features="raw x",
    fixed_width=lambda d, k: d,
    relative_cost=0.0,
    fit=pooled_fit,
    cost="once: O(N m d^2 + d^3)",
)
