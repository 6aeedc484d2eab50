"""The exact infinite-task FO-MAML gradient against Monte Carlo averages of the finite-task one."""

import numpy as np
import pytest

from metarep.families.problem import make_problem, sample_tasks
from metarep.linear.params import Params
from metarep.linear.primitives import prediction_gradient
from metarep.methods.fo_maml import fo_maml_gradient, fo_maml_population_gradient, fo_maml_population_moments

D, K, WIDTH, M_IN, M_OUT = 4, 2, 3, 3, 2
Z_MAX = 5.0   # tolerance in Monte Carlo standard errors


def _setup():
    problem = make_problem(D, K, task_mean=[0.5, -0.3], task_cov=[1.0, 0.5], noise_std=0.8,
                           rng=np.random.default_rng(1))
    rng = np.random.default_rng(5)
    params = Params(0.7 * rng.standard_normal((D, WIDTH)), 0.6 * rng.standard_normal(WIDTH))
    return problem, params


def _batch_means(fn, batches, seed):
    rng = np.random.default_rng(seed)
    vals = np.array([fn(rng) for _ in range(batches)])
    return vals.mean(axis=0), vals.std(axis=0, ddof=1) / np.sqrt(batches)


def test_fo_maml_population_gradient_matches_monte_carlo():
    """Large alpha and few inner samples, so that the alpha^2 and alpha^3 terms (third moments of
    the inner gradient) are well above the Monte Carlo error."""
    problem, params = _setup()
    alpha = 1.0
    grads, loss = fo_maml_population_gradient(params, problem, alpha=alpha, m_in=M_IN)

    def one_batch(rng):
        g, batch_loss = fo_maml_gradient(params, sample_tasks(problem, 10_000, M_IN, M_OUT, rng), alpha=alpha)
        return np.concatenate([g.B.ravel(), g.w, [batch_loss]])

    mc, se = _batch_means(one_batch, 40, seed=2)
    exact = np.concatenate([grads.B.ravel(), grads.w, [loss]])
    z = (exact - mc) / se
    assert np.abs(z).max() < Z_MAX, z

    # The check has power: the cubic term alone is far above the tolerance.
    mom = fo_maml_population_moments(params.B, params.w, problem, m_in=M_IN)
    cubic = alpha**3 * np.concatenate([mom["apply_K"](params.B).ravel(), mom["tr_K"] * params.w])
    assert np.abs(cubic / se[:-1]).max() > 3 * Z_MAX


@pytest.mark.parametrize("case", ["random heads", "fixed head, noisy labels"])
def test_third_and_fourth_moments_of_the_inner_gradient(case):
    """K = E[(theta.g) g g^T] and Q4 = E[(theta.g)^2 |g|^2] (module docstring) by sampling g.
    The second case (Sigma* = 0, one noisy inner sample) isolates the label-noise terms."""
    problem, params = _setup()
    m_in = M_IN
    if case != "random heads":
        problem = make_problem(D, K, task_mean=[0.5, -0.3], task_cov=0.0, noise_std=2.0,
                               rng=np.random.default_rng(1))
        m_in = 1
    mom = fo_maml_population_moments(params.B, params.w, problem, m_in=m_in)
    theta = mom["theta"]
    exact = np.concatenate([mom["apply_K"](np.eye(D)).ravel(), [mom["tr_K"], mom["Q4"]]])

    def one_batch(rng):
        tasks = sample_tasks(problem, 20_000, m_in, 0, rng)
        g, _ = prediction_gradient(tasks.X_in, theta, tasks.y_in)
        tg, gg = g @ theta, np.einsum("ni,ni->n", g, g)
        return np.concatenate([np.einsum("n,ni,nj->ij", tg, g, g).ravel() / len(g),
                               [np.mean(tg * gg), np.mean(tg**2 * gg)]])

    mc, se = _batch_means(one_batch, 50, seed=3)
    z = (exact - mc) / se
    assert np.abs(z).max() < Z_MAX, z

    # The check has power: the moments of g with infinitely many inner samples, (theta.v) v v^T
    # and (theta.v)^2 |v|^2 averaged over v, are far off.
    inf = fo_maml_population_moments(params.B, params.w, problem, m_in="inf")
    wrong = np.concatenate([inf["apply_K"](np.eye(D)).ravel(), [inf["tr_K"], inf["E_V2c2"]]])
    assert np.abs((wrong - mc) / se).max() > 3 * Z_MAX


def test_population_gradient_batched_and_infinite_samples():
    problem, params = _setup()
    rng = np.random.default_rng(0)
    Bs = params.B + 0.1 * rng.standard_normal((3, 2, D, WIDTH))
    ws = params.w + 0.1 * rng.standard_normal((3, 2, WIDTH))
    alphas = np.array([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]])
    m_ins = np.array([[3.0, np.inf]] * 3)
    grads, loss = fo_maml_population_gradient(Params(Bs, ws), problem, alpha=alphas, m_in=m_ins)
    assert grads.B.shape == Bs.shape and grads.w.shape == ws.shape and loss.shape == (3, 2)
    for i in range(3):
        for j in range(2):
            g, loss_ij = fo_maml_population_gradient(Params(Bs[i, j], ws[i, j]), problem, alpha=alphas[i, j],
                                                     m_in=m_ins[i, j])
            np.testing.assert_allclose(grads.B[i, j], g.B, rtol=1e-12, atol=1e-14)
            np.testing.assert_allclose(grads.w[i, j], g.w, rtol=1e-12, atol=1e-14)
            assert loss[i, j] == pytest.approx(loss_ij, rel=1e-12)


def test_population_gradient_without_noise_in_the_inner_step():
    """m_in = inf and alpha -> 0: the gradient of the plain expected loss, E[(theta - B* w*) w^T]."""
    problem, params = _setup()
    g, loss = fo_maml_population_gradient(params, problem, alpha=0.0, m_in="inf")
    mu = params.B @ params.w - problem.B_star @ problem.mu_star
    np.testing.assert_allclose(g.B, np.outer(mu, params.w), atol=1e-14)
    np.testing.assert_allclose(g.w, params.B.T @ mu, atol=1e-14)
    assert loss == pytest.approx(0.5 * (mu @ mu + np.trace(problem.Sigma_star) + problem.noise_std**2))
