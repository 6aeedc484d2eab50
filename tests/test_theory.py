import numpy as np
import pytest

from metarep.families.problem import make_problem
from metarep.linear.params import Params
from metarep.linear.population import fo_anil_population_gradient
from metarep.linear.theory import lambda_star, lemma2_asymptote, lemma2_perp_sq


@pytest.mark.parametrize("m_in", [4, 20, float("inf")])
@pytest.mark.parametrize("mean", [0.0, [0.7, -0.4, 0.2]])
def test_lambda_star_is_a_fixed_point_of_the_population_dynamics(m_in, mean):
    """B = B* Q with Q Q^T = Lambda* and B w = B* mu* makes the expected FO-ANIL gradient vanish."""
    rng = np.random.default_rng(2)
    problem = make_problem(8, 3, task_mean=mean, task_cov=[1.0, 2.0, 3.0], noise_std=1.5, rng=rng)
    alpha = 0.2
    lam = lambda_star(problem.Sigma_star, problem.noise_std, alpha, m_in)
    vals, vecs = np.linalg.eigh(lam)
    Q = vecs * np.sqrt(vals)                                 # (k, k): Q Q^T = Lambda*
    width = 5
    Q = np.hstack([Q, np.zeros((3, width - 3))]) @ np.linalg.qr(rng.standard_normal((width, width)))[0]
    B = problem.B_star @ Q
    w = np.linalg.lstsq(Q, problem.mu_star, rcond=None)[0]
    grads, _ = fo_anil_population_gradient(Params(B, w), problem, alpha=alpha, m_in=m_in)
    assert np.abs(grads.B).max() < 1e-12 and np.abs(grads.w).max() < 1e-12
    off, _ = fo_anil_population_gradient(Params(1.01 * B, w), problem, alpha=alpha, m_in=m_in)
    assert np.abs(off.B).max() > 1e-4


def test_lambda_star_diagonal_case_in_closed_form():
    lam = lambda_star(np.diag([1.0, 2.0]), 2.0, 0.5, 10)
    expect = [s / (0.5 * (1.1 * s + (3.0 + 4.0) / 10)) for s in (1.0, 2.0)]
    np.testing.assert_allclose(np.diag(lam), expect)


def test_lemma2_envelope_bounds_the_recursion_and_tends_to_the_asymptote():
    x, c, xs = 0.8, 0.01, []
    for _ in range(5000):
        xs.append(x)
        x = (1 - c * x) * x
    steps = np.arange(5000)
    env = lemma2_perp_sq(steps, 0.8, alpha=0.1, beta=1.0, noise_std=1.0, m_in=1)
    assert np.all(np.array(xs) <= env + 1e-15)
    late = lemma2_asymptote(steps[-1], alpha=0.1, beta=1.0, noise_std=1.0, m_in=1)
    assert xs[-1] == pytest.approx(late, rel=0.05)
