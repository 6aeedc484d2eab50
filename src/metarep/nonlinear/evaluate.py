"""Test time for the network: fit the head of each new task on its features phi(X), and the
excess risk that results (MATH 6 with X B replaced by phi(X); NumPy, no torch).

The head fits are the linear model's own (`adapt.fit_heads`) applied to the features: with
B = I_width and inputs phi(X), a head step, a ridge or a least-squares fit on X B is the same fit
on phi(X). Without a closed form for E_x[(f(x) - f*(x))^2], the excess risk of a test task is its
mean over a fixed evaluation set of fresh inputs X_eval (n, d), the same for every test task and
every method (paired comparisons):

    risk_t = mean_x ( phi(x)^T w_t - phi*(x)^T w*_t )^2,   phi*(x) the teacher's features.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from metarep.adapt import fit_heads
from metarep.nonlinear.model import MLPParams, features


def fit_test_heads(rule: str, params: MLPParams, X: np.ndarray, y: np.ndarray, *, activation: str, problem,
               alpha: float = 0.0, steps: int = 1, ridge: float = 0.0) -> np.ndarray:
    """The head of every test task (T, width) fitted on phi(X) (X (T, m, d), y (T, m)) by `rule`:
    "gradient" (steps from the shared head), "ridge", "lstsq", or "bayes" (the posterior mean on
    the teacher's features, for a network whose features are the teacher's)."""
    w = params.w if params.w.ndim == 1 else params.w.mean(axis=0)
    F = features(X, params.body(), activation)
    identity_problem = dataclasses.replace(problem, B_star=np.eye(F.shape[-1]))
    return fit_heads(rule, np.eye(F.shape[-1]), w, F, y, problem=identity_problem, alpha=alpha, steps=steps,
                     ridge=ridge)


def excess_risk(params: MLPParams, heads: np.ndarray, problem, w_star: np.ndarray, X_eval: np.ndarray,
                activation: str) -> np.ndarray:
    """risk_t of the module docstring for heads (T, width) and true heads w_star (T, k): (T,)."""
    diff = features(X_eval, params.body(), activation) @ heads.T - problem.teacher_features(X_eval) @ w_star.T
    return np.einsum("nt,nt->t", diff, diff) / X_eval.shape[0]
