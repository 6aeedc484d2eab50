"""`family = "gaussian"` (the default): Gaussian inputs, a linear or relu teacher on B*^T x and
Gaussian heads (MATH 1, metarep.families.problem). The draws are metarep.families.problem's, unchanged."""

from __future__ import annotations

import numpy as np

from metarep.families import problem as model
from metarep.families.base import Family, register_family


def make(p, rng: np.random.Generator) -> model.Problem:
    return model.make_problem(p.d, p.k, task_mean=p.task_mean, task_cov=p.task_cov, noise_std=p.noise_std,
                              rng=rng, teacher=p.teacher)


def sample_tasks(truth: model.Problem, n_tasks: int, m_in: int, m_out: int, rng: np.random.Generator):
    return model.sample_tasks(truth, n_tasks, m_in, m_out, rng)


def sample_inputs(truth: model.Problem, n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal((n, truth.d))


def span(truth: model.Problem, X: np.ndarray) -> np.ndarray:
    """The teacher's features B*^T x (or relu(B*^T x)): span(B*) for the linear teacher."""
    return truth.teacher_features(X)


def oracle(truth: model.Problem, X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The Bayes head on the true features X B* under the true prior (metarep.linear.adapt.bayes_heads)."""
    from metarep.linear.adapt import bayes_heads

    return bayes_heads(truth, X, y)


def arrays(truth: model.Problem) -> dict:
    return {"B_star": truth.B_star, "mu_star": truth.mu_star, "Sigma_star": truth.Sigma_star}


FAMILY = register_family(Family(
    name="gaussian",
    summary="x ~ N(0, I_d), y = phi*(x)^T w* + noise, phi* = B*^T x or relu(B*^T x), w* ~ N(mu*, Sigma*) (MATH 1)",
    make=make, sample_tasks=sample_tasks, sample_inputs=sample_inputs, probe=sample_inputs, arrays=arrays,
    span=span, oracle=oracle,
))
