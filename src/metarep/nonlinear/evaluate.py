"""Test time for the network: fit the head of each new task on its features phi(X), and the
excess risk that results (MATH 6 with X B replaced by phi(X); NumPy, no torch).

The head fits are the linear model's own (`adapt.fit_heads`) applied to the features: with
B = I_width and inputs phi(X), a head step, a ridge or a least-squares fit on X B is the same fit
on phi(X). The excess risk of a test task is a quadratic form in its head error,

    risk_t = E_x ( phi(x)^T w_t - phi*(x)^T w*_t )^2 = v_t^T M v_t,
    v_t = (w_t, -w*_t),  M = E_x[psi(x) psi(x)^T],  psi(x) = (phi(x), phi*(x)),

phi*(x) the teacher's features. M is estimated once per evaluation on EVAL_INPUTS fresh inputs
(2^18, accumulated in blocks), the same M for every task and every rule: its relative error,
about sqrt(2 / EVAL_INPUTS) = 0.3%, is shared by all tasks and sits well inside the standard
error over test.tasks tasks (about 1 / sqrt(tasks) relative: 3% for 1000 tasks).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from metarep.families import sample_inputs
from metarep.linear.adapt import fit_heads
from metarep.linear.random_effects import Prior, fit_prior, task_stats
from metarep.nonlinear.model import MLPParams, features

EVAL_INPUTS = 2**18
EVAL_BLOCK = 2**14


def fit_test_heads(rule: str, params: MLPParams, X: np.ndarray, y: np.ndarray, *, activation: str, problem,
                   alpha: float = 0.0, steps: int = 1, ridge: float = 0.0, prior: Prior | None = None) -> np.ndarray:
    """The head of every test task (T, width) fitted on phi(X) (X (T, m, d), y (T, m)) by `rule`:
    "gradient" (steps from the shared head), "ridge", "lstsq", or "bayes" (the posterior mean on
    phi(X) under `prior`, `feature_prior`; without one, on the teacher's features under the true
    prior, for a network whose features are the teacher's)."""
    w = params.w if params.w.ndim == 1 else params.w.mean(axis=0)
    F = features(X, params.body(), activation)
    identity_problem = dataclasses.replace(problem, B_star=np.eye(F.shape[-1])) if rule == "bayes" and prior is None \
        else None  # only the true prior's head reads it (a family without B* has no such head)
    return fit_heads(rule, np.eye(F.shape[-1]), w, F, y, problem=identity_problem, alpha=alpha, steps=steps,
                     ridge=ridge, prior=prior)


def feature_prior(params: MLPParams, activation: str, training_tasks) -> Prior | None:
    """The empirical prior of the heads on phi(X): the random-effects model (MATH 8) fitted to
    the features of every row of the training tasks `training_tasks()` (None: no prior)."""
    if training_tasks is None:
        return None
    tasks = training_tasks()
    body = {name: np.asarray(a, dtype=np.float64) for name, a in params.body().items()}
    X = np.concatenate([tasks.X_in, tasks.X_out], axis=1)
    return fit_prior(task_stats(features(X, body, activation), np.concatenate([tasks.y_in, tasks.y_out], axis=1)))


def excess_risk(params: MLPParams, heads: np.ndarray, problem, w_star: np.ndarray, X_eval: np.ndarray,
                activation: str) -> np.ndarray:
    """risk_t of the module docstring for heads (T, width) and true heads w_star (T, k): (T,)."""
    diff = features(X_eval, params.body(), activation) @ heads.T - problem.teacher_features(X_eval) @ w_star.T
    return np.einsum("nt,nt->t", diff, diff) / X_eval.shape[0]


def feature_moments(params: MLPParams, problem, activation: str, rng: np.random.Generator, *,
                    n: int = EVAL_INPUTS, block: int = EVAL_BLOCK) -> np.ndarray:
    """M = mean over n standard normal inputs of psi psi^T, psi = (phi(x), phi*(x)):
    (width + k, width + k), in float64, drawn and accumulated `block` inputs at a time."""
    body = {name: np.asarray(a, dtype=np.float64) for name, a in params.body().items()}
    M = None
    for start in range(0, n, block):
        X = sample_inputs(problem, min(block, n - start), rng)  # the family's inputs (Gaussian: N(0, I_d))
        psi = np.hstack([features(X, body, activation), problem.teacher_features(X)])
        M = psi.T @ psi if M is None else M + psi.T @ psi
    assert M is not None
    return M / n


def moment_risk(heads: np.ndarray, w_star: np.ndarray, M: np.ndarray) -> np.ndarray:
    """risk_t = v_t^T M v_t with v_t = (heads_t, -w*_t) (module docstring): (T,)."""
    v = np.hstack([heads, -w_star])
    return np.einsum("ti,ij,tj->t", v, M, v)
