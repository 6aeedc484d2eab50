import numpy as np
import pytest

from metarep.families.problem import sample_tasks
from metarep.linear.adapt import (
    bayes_heads,
    excess_risk,
    expected_excess_risk_one_step,
    fit_heads,
    gradient_heads,
    ridge_heads,
)


@pytest.mark.parametrize("m_test", [3, 12])
def test_one_step_closed_form_matches_monte_carlo(general_problem, rng, m_test):
    B = rng.standard_normal((7, 5)) * 0.6
    w = rng.standard_normal(5) * 0.4
    tasks = sample_tasks(general_problem, 200_000, m_test, 0, rng)
    heads = gradient_heads(B, w, tasks.X_in, tasks.y_in, alpha=0.4, steps=1)
    risks = excess_risk(B, heads, general_problem.B_star, tasks.w_star)
    expected = expected_excess_risk_one_step(B, w, general_problem, alpha=0.4, m_test=m_test)
    se = risks.std() / np.sqrt(risks.size)
    assert abs(risks.mean() - expected) < 4 * se
    wrong = expected_excess_risk_one_step(B, w, general_problem, alpha=0.4, m_test=m_test + 1)
    assert abs(risks.mean() - wrong) > 4 * se, "the check cannot tell m_test from m_test + 1"


def test_gradient_heads_equal_a_per_task_loop(general_problem, rng):
    B, w = rng.standard_normal((7, 4)), rng.standard_normal(4)
    tasks = sample_tasks(general_problem, 5, 6, 0, rng)
    heads = gradient_heads(B, w, tasks.X_in, tasks.y_in, alpha=0.05, steps=3)
    for i in range(5):
        h = w.copy()
        X, y = tasks.X_in[i], tasks.y_in[i]
        for _ in range(3):
            h = h - 0.05 * B.T @ X.T @ (X @ B @ h - y) / 6
        np.testing.assert_allclose(heads[i], h, rtol=1e-12)


def test_ridge_heads_solve_the_normal_equations(general_problem, rng):
    B = rng.standard_normal((7, 4))
    tasks = sample_tasks(general_problem, 4, 9, 0, rng)
    heads = ridge_heads(B, tasks.X_in, tasks.y_in, ridge=0.3)
    for i in range(4):
        F = tasks.X_in[i] @ B
        grad = F.T @ (F @ heads[i] - tasks.y_in[i]) / 9 + 0.3 * heads[i]
        assert np.abs(grad).max() < 1e-10


def test_lstsq_heads_are_minimum_norm_interpolants(general_problem, rng):
    B = rng.standard_normal((7, 6))
    tasks = sample_tasks(general_problem, 3, 4, 0, rng)
    heads = fit_heads("lstsq", B, None, tasks.X_in, tasks.y_in)
    for i in range(3):
        F = tasks.X_in[i] @ B
        np.testing.assert_allclose(F @ heads[i], tasks.y_in[i], atol=1e-9)
        np.testing.assert_allclose(heads[i], np.linalg.pinv(F) @ tasks.y_in[i], atol=1e-10)


def test_bayes_head_is_the_posterior_mean(general_problem, rng):
    """Against the information form: (Sigma^-1 + F^T F / s^2)^-1 (Sigma^-1 mu + F^T y / s^2)."""
    tasks = sample_tasks(general_problem, 3, 5, 0, rng)
    heads = bayes_heads(general_problem, tasks.X_in, tasks.y_in)
    P = np.linalg.inv(general_problem.Sigma_star)
    s2 = general_problem.noise_std**2
    for i in range(3):
        F = tasks.X_in[i] @ general_problem.B_star
        post = np.linalg.solve(P + F.T @ F / s2, P @ general_problem.mu_star + F.T @ tasks.y_in[i] / s2)
        np.testing.assert_allclose(heads[i], post, rtol=1e-9)


def test_bayes_head_beats_least_squares_on_the_true_features(general_problem, rng):
    tasks = sample_tasks(general_problem, 20_000, 4, 0, rng)
    Bs = general_problem.B_star
    bayes = excess_risk(Bs, bayes_heads(general_problem, tasks.X_in, tasks.y_in), Bs, tasks.w_star)
    lstsq = excess_risk(Bs, fit_heads("lstsq", Bs, None, tasks.X_in, tasks.y_in), Bs, tasks.w_star)
    assert bayes.mean() < lstsq.mean()
