"""Method of moments (Tripuraneni, Jin, Jordan 2021; MATH 3, 'Baselines').

E[y^2 x x^T] = (tr M* + sigma^2) I + 2 B* M* B*^T for Gaussian x, so the top-k eigenvectors of
the empirical (1/(N m)) sum y^2 x x^T span B*'s column space as N m grows (when M* is
positive definite).
"""

from __future__ import annotations

import numpy as np

from metarep.linear.params import Params
from metarep.methods.base import Method


def moment_matrix(tasks) -> np.ndarray:
    """(1/(N m)) sum over every sample (inner and outer) of y^2 x x^T, (d, d): one weighted
    Gram matrix of the stacked (N m, d) samples, no per-task d x d matrix."""
    d = tasks.d
    total, count = np.zeros((d, d)), 0
    for X, y in ((tasks.X_in, tasks.y_in), (tasks.X_out, tasks.y_out)):
        if y.size == 0:
            continue
        Z = X.reshape(-1, d) * np.abs(y).reshape(-1, 1)
        total += Z.T @ Z
        count += y.size
    return total / count


def moments_fit(problem, tasks, *, width: int, rng=None) -> Params:
    """B = the top-`width` eigenvectors of `moment_matrix(tasks)` (largest eigenvalue first),
    w = 0. `problem` and `rng` are not used (the estimate sees only the data)."""
    d = tasks.d
    if not 1 <= width <= d:
        raise ValueError(f"moments: model.width must be between 1 and d = {d}, got {width}")
    _, vecs = np.linalg.eigh(moment_matrix(tasks))
    B = np.ascontiguousarray(vecs[:, ::-1][:, :width])
    return Params(B, np.zeros(width))


def _check_width(config) -> None:
    if config.model.width > config.problem.d:
        raise ValueError(f"model.width must be <= problem.d = {config.problem.d} for method 'moments' "
                         f"(eigenvectors of a d x d matrix), got {config.model.width}")


METHOD = Method(
    name="moments",
    summary="method of moments: top eigenvectors of the label-weighted feature covariance",
    adapts="nothing (new tasks fit a head on X B)",
    default_adapt="lstsq",
    check=_check_width,
    relative_cost=0.0,
    fit=moments_fit,
    cost="once: O(N m d^2 + d^3)",
)
