import numpy as np

from metarep.linear import metrics
from metarep.linear.params import Params
from metarep.linear.theory import lambda_star


def test_tracked_quantities_against_explicit_formulas(general_problem, rng):
    B, w = rng.standard_normal((7, 5)), rng.standard_normal(5)
    Bs = general_problem.B_star
    lam = lambda_star(general_problem.Sigma_star, general_problem.noise_std, 0.1, 5)
    out = metrics.track(Params(B, w), general_problem, lam)
    P_perp = np.eye(7) - Bs @ Bs.T
    sv = np.linalg.svd(Bs.T @ B, compute_uv=False)
    assert np.isclose(out["align_norm"], sv.max()) and np.isclose(out["sigma_min"], sv.min())
    assert np.isclose(out["perp_norm"], np.linalg.svd(P_perp @ B, compute_uv=False).max())
    assert np.isclose(out["mean_norm"], np.linalg.norm(B @ w - Bs @ general_problem.mu_star))
    Lam = Bs.T @ B @ B.T @ Bs
    assert np.isclose(out["lambda_rel_err"], np.linalg.norm(Lam - lam, 2) / np.linalg.norm(lam, 2))
    np.testing.assert_allclose(out["singular_values"], np.linalg.svd(B, compute_uv=False))


def test_metrics_accept_a_batch_axis(general_problem, rng):
    B, w = rng.standard_normal((3, 7, 5)), rng.standard_normal((3, 5))
    lam = np.eye(3)
    batched = metrics.track(Params(B, w), general_problem, lam)
    for i in range(3):
        single = metrics.track(Params(B[i], w[i]), general_problem, lam)
        for key in single:
            np.testing.assert_allclose(batched[key][i], single[key])


def test_numerical_rank():
    assert metrics.numerical_rank(np.array([3.0, 1.0, 0.04, 0.001])) == 3
