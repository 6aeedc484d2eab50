import numpy as np
import pytest

from metarep.families.problem import make_problem, sample_tasks
from metarep.linear import metrics
from metarep.linear.params import Params
from metarep.linear.population import fo_anil_population_gradient, population_step
from metarep.linear.primitives import prediction_gradient_reference
from metarep.linear.theory import lambda_star
from population_reference import math4_one


def per_task_fo_anil_terms(B, w, tasks, alpha):
    """Each task's contribution to the FO-ANIL gradient, (M, d, k') and (M, k'), plain einsum."""
    G, _ = prediction_gradient_reference(tasks.X_in, B @ w, tasks.y_in)
    W = w - alpha * G @ B
    G_out, _ = prediction_gradient_reference(tasks.X_out, W @ B.T, tasks.y_out)
    return np.einsum("nd,nk->ndk", G_out, W), G_out @ B


def monte_carlo_gradient(problem, params, alpha, m_in, m_out, n_tasks, rng, chunk=50_000):
    sums = [0.0, 0.0, 0.0, 0.0]
    for start in range(0, n_tasks, chunk):
        tasks = sample_tasks(problem, min(chunk, n_tasks - start), m_in, m_out, rng)
        tB, tw = per_task_fo_anil_terms(*params, tasks, alpha)
        sums = [sums[0] + tB.sum(0), sums[1] + (tB**2).sum(0), sums[2] + tw.sum(0), sums[3] + (tw**2).sum(0)]
    mean_B, mean_w = sums[0] / n_tasks, sums[2] / n_tasks
    se_B = np.sqrt((sums[1] / n_tasks - mean_B**2) / n_tasks)
    se_w = np.sqrt((sums[3] / n_tasks - mean_w**2) / n_tasks)
    return mean_B, se_B, mean_w, se_w


@pytest.fixture(scope="module")
def mc_setup():
    rng = np.random.default_rng(7)
    A = rng.standard_normal((2, 2))
    problem = make_problem(5, 2, task_mean=[0.8, -0.5], task_cov=(A @ A.T + 0.3 * np.eye(2)).tolist(),
                           noise_std=0.9, rng=rng)
    params = Params(rng.standard_normal((5, 4)) * 0.8, rng.standard_normal(4) * 0.5)
    alpha, m_in = 0.3, 3
    mc = monte_carlo_gradient(problem, params, alpha, m_in, 2, 400_000, rng)
    return problem, params, alpha, m_in, mc


def max_z(problem, params, alpha, m_in, mc):
    grads, _ = fo_anil_population_gradient(params, problem, alpha=alpha, m_in=m_in)
    mean_B, se_B, mean_w, se_w = mc
    return max(np.abs((grads.B - mean_B) / se_B).max(), np.abs((grads.w - mean_w) / se_w).max())


def test_population_gradient_matches_monte_carlo(mc_setup):
    problem, params, alpha, m_in, mc = mc_setup
    assert max_z(problem, params, alpha, m_in, mc) < 5.0


def test_the_readable_reference_matches_monte_carlo(mc_setup):
    """tests/population_reference.py, which the fast step is checked against, is itself right."""
    problem, params, alpha, m_in, (mean_B, se_B, mean_w, se_w) = mc_setup
    ref = math4_one(params.B, params.w, problem, alpha, 0.0, m_in)
    assert max(np.abs((ref["grad_B"] - mean_B) / se_B).max(), np.abs((ref["grad_w"] - mean_w) / se_w).max()) < 5.0


def test_monte_carlo_check_detects_a_wrong_sample_size(mc_setup):
    """The same tolerance rejects the population gradient for a neighbouring m_in: the check has power."""
    problem, params, alpha, m_in, mc = mc_setup
    assert max_z(problem, params, alpha, m_in + 2, mc) > 5.0


def test_population_loss_matches_monte_carlo(mc_setup):
    problem, params, alpha, m_in, _ = mc_setup
    rng = np.random.default_rng(3)
    tasks = sample_tasks(problem, 200_000, m_in, 2, rng)
    G, _ = prediction_gradient_reference(tasks.X_in, params.B @ params.w, tasks.y_in)
    W = params.w - alpha * G @ params.B
    _, losses = prediction_gradient_reference(tasks.X_out, W @ params.B.T, tasks.y_out)
    _, loss = fo_anil_population_gradient(params, problem, alpha=alpha, m_in=m_in)
    assert abs(loss - losses.mean()) < 5 * losses.std() / np.sqrt(losses.size)


def run_population(problem, m_in, steps, alpha=0.2, beta=0.1, seed=0):
    rng = np.random.default_rng(seed)
    params = Params(rng.standard_normal((problem.d, problem.d)) / np.sqrt(problem.d), np.zeros(problem.d))
    lam = lambda_star(problem.Sigma_star, problem.noise_std, alpha, m_in)
    rows = []
    for t in range(steps + 1):
        if t % (steps // 10) == 0:
            rows.append(metrics.track(params, problem, lam))
        params, _ = population_step(params, problem, alpha=alpha, beta=beta, m_in=m_in)
    return rows


def test_population_fo_anil_converges_to_lambda_star():
    problem = make_problem(10, 2, task_cov=[1.0, 2.0], noise_std=1.0, rng=np.random.default_rng(0))
    rows = run_population(problem, m_in=5, steps=4000)
    assert rows[-1]["lambda_rel_err"] < 1e-3
    assert rows[-1]["mean_norm"] < 1e-8
    perp = [float(r["perp_norm"]) for r in rows]
    assert all(b < a for a, b in zip(perp, perp[1:])), perp
    assert perp[-1] < 0.5 * perp[0]


def test_population_with_nonzero_mean_learns_the_mean():
    problem = make_problem(10, 2, task_mean=[1.0, -0.5], task_cov=[1.0, 2.0], rng=np.random.default_rng(1))
    rows = run_population(problem, m_in=5, steps=4000)
    mean = [float(r["mean_norm"]) for r in rows]
    assert all(b < a for a, b in zip(mean, mean[1:])), mean
    assert mean[-1] < 1e-3 * mean[0]
    assert rows[-1]["lambda_rel_err"] < 1e-3


def test_infinite_samples_keep_the_orthogonal_part():
    problem = make_problem(10, 2, task_cov=[1.0, 2.0], noise_std=1.0, rng=np.random.default_rng(0))
    rows = run_population(problem, m_in=float("inf"), steps=4000)
    assert rows[-1]["lambda_rel_err"] < 1e-3
    perp = [float(r["perp_norm"]) for r in rows]
    np.testing.assert_allclose(perp[1:], perp[1], rtol=1e-6)


def test_batched_population_step_equals_one_at_a_time(general_problem, rng):
    B = rng.standard_normal((4, 7, 5))
    w = rng.standard_normal((4, 5))
    alpha, beta, m_in = np.array([0.1, 0.2, 0.3, 0.4]), np.array([0.05, 0.1, 0.1, 0.2]), np.array([3, 5, np.inf, 8])
    batched, loss = population_step(Params(B, w), general_problem, alpha=alpha, beta=beta, m_in=m_in)
    for i in range(4):
        single, single_loss = population_step(Params(B[i], w[i]), general_problem, alpha=alpha[i], beta=beta[i],
                                              m_in=m_in[i])
        np.testing.assert_allclose(batched.B[i], single.B, rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(batched.w[i], single.w, rtol=1e-13, atol=1e-13)
        assert loss[i] == pytest.approx(single_loss, rel=1e-13)
