"""The network's measures of unlearning that a rescaling cannot fake (perp_ratio, grad_perp_share)
and the R^2 probe of the teacher's own features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from metarep.families.problem import make_problem
from metarep.nonlinear.metrics import grad_perp_share, input_gradients, track
from metarep.nonlinear.model import MLPParams, MLPSpec, features, init_mlp_params

torch = pytest.importorskip("torch")


def _problem(teacher="linear", d=7, k=2):
    return make_problem(d, k, task_cov=[1.0, 2.0], noise_std=0.3, rng=np.random.default_rng(0), teacher=teacher)


def _net(layers, bias, activation, heads=0, d=7, seed=1):
    """A random network (biases and head nonzero), with `heads` per-task heads when heads > 0."""
    spec = MLPSpec(d=d, width=4, layers=layers, hidden=5, activation=activation, bias=bias)
    p = init_mlp_params(spec, init_scale=1.0, init_head_scale=1.0, rng=np.random.default_rng(seed))
    rng = np.random.default_rng(seed + 1)
    w = rng.standard_normal((heads, 4)) if heads else p.w
    return p._replace(b1=0.3 * rng.standard_normal(p.b1.shape), b2=0.3 * rng.standard_normal(p.b2.shape), w=w)


@pytest.mark.parametrize("heads", [0, 3])
@pytest.mark.parametrize("activation", ["relu", "identity"])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("layers", [2, 3])
def test_input_gradients_match_autograd(layers, bias, activation, heads):
    params = _net(layers, bias, activation, heads)
    X = np.random.default_rng(5).standard_normal((40, 7))
    head = params.w if params.w.ndim == 1 else params.w.mean(axis=0)
    body = {name: torch.tensor(a) for name, a in params.body().items()}
    x = torch.tensor(X, requires_grad=True)
    (features(x, body, activation) @ torch.tensor(head)).sum().backward()   # rows independent: per-input gradients
    np.testing.assert_allclose(input_gradients(params, X, activation), x.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_identity_network_share_is_the_linear_models():
    """f(x) = x^T B w: the gradient is B w everywhere, its share outside span(B*) ||P_perp B w||^2 / ||B w||^2."""
    problem = _problem()
    params = _net(2, False, "identity")
    out = track(params, problem, np.random.default_rng(3).standard_normal((300, 7)), "identity")
    Bw = params.W1.T @ params.w
    perp = Bw - problem.B_star @ (problem.B_star.T @ Bw)
    assert out["grad_perp_share"] == pytest.approx(perp @ perp / (Bw @ Bw), rel=1e-10)
    assert out["perp_ratio"] == pytest.approx(out["perp_norm"] / out["align_norm"], rel=1e-14)


def test_measures_ignore_the_rescaling_that_fakes_perp_norm():
    """W1 -> c W1, w -> w / c: the bias-free relu network is unchanged, perp_norm scales by c."""
    problem = _problem("relu")
    params = _net(2, False, "relu")
    X = np.random.default_rng(3).standard_normal((500, 7))
    scaled = params._replace(W1=0.1 * params.W1, w=params.w / 0.1)
    np.testing.assert_allclose(features(X, scaled.body(), "relu") @ scaled.w,
                               features(X, params.body(), "relu") @ params.w, rtol=1e-12)
    a, b = track(params, problem, X, "relu"), track(scaled, problem, X, "relu")
    assert b["perp_norm"] == pytest.approx(0.1 * a["perp_norm"])
    for key in ("perp_ratio", "grad_perp_share", "effective_rank", "r2"):
        assert b[key] == pytest.approx(a[key], rel=1e-10), key


def test_only_the_gradient_share_ignores_a_rescaling_per_unit():
    """W1_j -> c_j W1_j, w_j -> w_j / c_j (c_j > 0) leaves the relu network unchanged too: the
    function-space share and r2 do not move; perp_ratio, a norm of W1, does."""
    problem = _problem("relu")
    params = _net(2, False, "relu")
    X = np.random.default_rng(3).standard_normal((500, 7))
    c = np.array([0.1, 3.0, 1.0, 0.5])
    scaled = params._replace(W1=c[:, None] * params.W1, w=params.w / c)
    a, b = track(params, problem, X, "relu"), track(scaled, problem, X, "relu")
    for key in ("grad_perp_share", "r2"):
        assert b[key] == pytest.approx(a[key], rel=1e-10), key
    assert abs(b["perp_ratio"] / a["perp_ratio"] - 1) > 0.01


def test_share_of_a_function_inside_and_outside_the_span():
    problem = _problem()
    G = np.random.default_rng(0).standard_normal((50, 2)) @ problem.B_star.T
    assert grad_perp_share(G, problem.B_star) == pytest.approx(0.0, abs=1e-28)
    P = np.eye(7) - problem.B_star @ problem.B_star.T
    assert grad_perp_share(G @ P + np.ones((50, 7)) @ P, problem.B_star) == pytest.approx(1.0)
    assert np.isnan(grad_perp_share(np.zeros((3, 7)), problem.B_star))     # a constant function
    assert grad_perp_share(np.random.default_rng(1).standard_normal((20000, 7)), problem.B_star) \
        == pytest.approx(5 / 7, abs=0.01)


@pytest.mark.parametrize("teacher", ["linear", "relu"])
def test_oracle_scores_one_on_the_teachers_features(teacher):
    """The R^2 probe regresses the teacher's own features (relu(B*^T x) for the relu teacher): the
    oracle, the teacher's network, scores 1 and its gradient lies in span(B*)."""
    from metarep.config.schema import validate
    from metarep.engine import run

    config = validate({"problem": {"d": 6, "k": 2, "teacher": teacher, "task_mean": [0.5, -1.0]},
                       "model": {"arch": "mlp", "width": 4}, "method": {"name": "oracle"},
                       "train": {"tasks": 10, "m_in": 4, "m_out": 4}, "test": {"m_test": 6, "tasks": 10}})
    final = run(config)[2]["final"]
    assert final["r2"] >= 0.999
    assert final["grad_perp_share"] == pytest.approx(0.0, abs=1e-20)


def test_a_runs_rows_and_final_carry_the_measures():
    from metarep.config.schema import validate
    from metarep.engine import run

    config = validate({"problem": {"d": 5, "k": 2, "teacher": "relu"},
                       "model": {"arch": "mlp", "width": 4, "init_head_scale": 1.0},
                       "method": {"name": "fo-anil"},
                       "train": {"tasks": 10, "m_in": 4, "m_out": 4, "steps": 4, "log_every": 2, "alpha": 0.2,
                                 "beta": 0.1}, "test": {"m_test": 6, "tasks": 10}})
    _, state, summary = run(config)
    for row in [*state.history, summary["final"]]:
        assert 0 < row["grad_perp_share"] < 1 and row["perp_ratio"] > 0
        assert row["perp_ratio"] == pytest.approx(row["perp_norm"] / row["align_norm"])


def test_per_task_heads_are_averaged():
    problem = _problem()
    params = _net(2, True, "relu", heads=4)
    X = np.random.default_rng(3).standard_normal((100, 7))
    shared = MLPParams(*params[:4], params.w.mean(axis=0))
    assert track(params, problem, X, "relu")["grad_perp_share"] == track(shared, problem, X, "relu")["grad_perp_share"]


def test_the_paper_config_is_the_papers_setting():
    from metarep.config.files import load

    c = load(Path(__file__).parents[1] / "experiments" / "nonlinear" / "paper.toml")
    p, t, m = c.problem, c.train, c.model
    assert (t.tasks, p.d, p.k, t.m_in, t.m_out, p.noise_std**2, m.width) == (5000, 50, 5, 20, 10, 4.0, 50)
    np.testing.assert_allclose(np.diag(c.problem.task_cov) if np.ndim(p.task_cov) == 2 else p.task_cov,
                               np.arange(1, 6) / 3, rtol=1e-15)
    assert (m.arch, m.options.layers, m.options.activation, c.method.name, c.test.adapt) == \
        ("mlp", 2, "relu", "fo-anil", "tuned")
