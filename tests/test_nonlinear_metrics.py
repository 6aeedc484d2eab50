"""The network's tracked quantities, its test-time fits and excess risk, and the relu teacher."""

import numpy as np
import pytest

from metarep.families.problem import make_problem, sample_heads, sample_tasks
from metarep.linear import adapt
from metarep.linear.params import init_params
from metarep.nonlinear.evaluate import excess_risk, fit_test_heads
from metarep.nonlinear.metrics import effective_rank, linear_r2, track
from metarep.nonlinear.model import MLPParams, MLPSpec, features, init_mlp_params


def _problem(teacher="linear", d=6, k=2):
    return make_problem(d, k, task_cov=list(np.linspace(1.0, 0.5, k)), noise_std=0.3, rng=np.random.default_rng(0),
                        teacher=teacher)


def test_linear_teacher_draws_unchanged():
    """The linear teacher's labels are today's draws, bit for bit."""
    problem = _problem()
    rng = np.random.default_rng(7)
    tasks = sample_tasks(problem, 4, 5, 3, rng)
    rng = np.random.default_rng(7)
    w = sample_heads(problem, 4, rng)
    X = rng.standard_normal((4, 5, 6))
    y = np.einsum("nmd,nd->nm", X, w @ problem.B_star.T) + 0.3 * rng.standard_normal((4, 5))
    np.testing.assert_array_equal(tasks.X_in, X)
    np.testing.assert_array_equal(tasks.y_in, y)


def test_relu_teacher_labels():
    problem = _problem("relu")
    tasks = sample_tasks(problem, 3, 4, 0, np.random.default_rng(1))
    clean = np.array([[np.array([max(x @ problem.B_star[:, j], 0) for j in range(2)]) @ tasks.w_star[i]
                       for x in tasks.X_in[i]] for i in range(3)])
    resid = tasks.y_in - clean
    assert 0.05 < resid.std() < 1.0 and np.abs(resid).max() < 2.0
    # same draws as the linear teacher, different labels
    lin = sample_tasks(_problem(), 3, 4, 0, np.random.default_rng(1))
    np.testing.assert_array_equal(lin.X_in, tasks.X_in)
    np.testing.assert_allclose(lin.y_in - np.einsum("nmd,nd->nm", lin.X_in, lin.w_star @ problem.B_star.T),
                               resid, atol=1e-12)
    with pytest.raises(ValueError, match="teacher"):
        make_problem(3, 1, rng=np.random.default_rng(0), teacher="tanh")


def test_effective_rank_and_r2():
    assert effective_rank(np.array([2.0, 2.0, 2.0, 0.0])) == pytest.approx(3.0)
    assert effective_rank(np.array([1.0, 0.0])) == pytest.approx(1.0)
    assert 1.0 < effective_rank(np.array([1.0, 0.1])) < 2.0
    rng = np.random.default_rng(0)
    Z = rng.standard_normal((500, 2))
    assert linear_r2(np.column_stack([Z @ [[1, 2], [3, 4]], rng.standard_normal(500)]), Z) == pytest.approx(1.0)
    assert linear_r2(rng.standard_normal((500, 3)), Z) < 0.05
    assert 0.3 < linear_r2(np.column_stack([Z[:, 0]]), Z) < 0.7


def test_track_first_layer_is_the_linear_b():
    problem = _problem()
    lin = init_params(6, 4, init_scale=1.0, init_head_scale=0.0, rng=np.random.default_rng(2))
    mlp = init_mlp_params(MLPSpec(d=6, width=4, activation="identity"), init_scale=1.0, init_head_scale=0.0,
                          rng=np.random.default_rng(2))
    X = np.random.default_rng(3).standard_normal((4000, 6))
    out = track(mlp, problem, X, "identity")
    B = lin.B
    assert out["align_norm"] == pytest.approx(np.linalg.norm(problem.B_star.T @ B, 2))
    P = np.eye(6) - problem.B_star @ problem.B_star.T
    assert out["perp_norm"] == pytest.approx(np.linalg.norm(P @ B, 2))
    np.testing.assert_allclose(out["singular_values"], np.linalg.svd(B, compute_uv=False))
    # phi = B^T x: covariance ~ B^T B; R^2 = 1 - ||B*^T (I - P_B)||_F^2 / k, P_B onto range(B)
    np.testing.assert_allclose(out["phi_eigenvalues"], np.linalg.eigvalsh(B.T @ B)[::-1], rtol=0.1)
    Q, _ = np.linalg.qr(B)
    lost = problem.B_star.T - (problem.B_star.T @ Q) @ Q.T
    assert out["r2"] == pytest.approx(1 - np.sum(lost**2) / 2, abs=0.01)
    assert out["r2"] < 0.9
    relu = track(mlp, problem, X, "relu")
    assert relu["r2"] < 0.95 and relu["phi_eigenvalues"].shape == (4,)


@pytest.mark.parametrize("rule", ["gradient", "ridge", "lstsq"])
def test_identity_network_test_heads_are_the_linear_heads(rule):
    problem = _problem()
    lin = init_params(6, 4, init_scale=1.0, init_head_scale=0.5, rng=np.random.default_rng(2))
    mlp = MLPParams.from_parts({"W1": lin.B.T.copy()}, lin.w)
    test = sample_tasks(problem, 50, 8, 0, np.random.default_rng(5))
    heads = fit_test_heads(rule, mlp, test.X_in, test.y_in, activation="identity", problem=problem,
                           alpha=0.1, steps=2, ridge=0.01)
    ref = adapt.fit_heads(rule, lin.B, lin.w, test.X_in, test.y_in, alpha=0.1, steps=2, ridge=0.01)
    np.testing.assert_allclose(heads, ref, rtol=0, atol=1e-10)
    # Monte Carlo excess risk over the evaluation inputs against the closed form (isotropic x)
    X_eval = np.random.default_rng(6).standard_normal((20000, 6))
    mc = excess_risk(mlp, heads, problem, test.w_star, X_eval, "identity")
    exact = adapt.excess_risk(lin.B, heads, problem.B_star, test.w_star)
    assert abs(mc.mean() / exact.mean() - 1) < 0.03


def test_oracle_bayes_heads_on_relu_teacher_features():
    """A network equal to the relu teacher, Bayes heads: the excess risk is the posterior's,
    far below least squares on the same features with few samples."""
    from metarep.methods.mlp.oracle import teacher_fit

    problem = _problem("relu", d=10, k=3)
    params, spec = teacher_fit(problem, None, spec=MLPSpec(d=10, width=20), init=None)
    assert spec.activation == "relu" and spec.width == 3
    test = sample_tasks(problem, 200, 3, 0, np.random.default_rng(5))
    X_eval = np.random.default_rng(6).standard_normal((4000, 10))
    np.testing.assert_allclose(features(X_eval, params.body(), "relu"), problem.teacher_features(X_eval))
    risks = {rule: excess_risk(params, fit_test_heads(rule, params, test.X_in, test.y_in, activation="relu",
                                                      problem=problem), problem, test.w_star, X_eval, "relu").mean()
             for rule in ("bayes", "lstsq")}
    assert risks["bayes"] < 0.5 * risks["lstsq"]
