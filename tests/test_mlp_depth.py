"""Networks deeper than three layers (model.layers = L >= 4): their initialisation and stored fields,
the meta-gradients against a per-task torch.autograd loop, the input gradient, the identity network
as the product of its layers, the test-time steps, and runs through the engine (their resume is in
tests/test_nonlinear_run.py)."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import metarep  # noqa: E402
from metarep.config.schema import ConfigError, validate  # noqa: E402
from metarep.families.network import adapt, forward, gradient, per_task  # noqa: E402
from metarep.families.problem import make_problem, sample_tasks  # noqa: E402
from metarep.methods import get_method  # noqa: E402
from metarep.models.mlp import estimate_bytes  # noqa: E402
from metarep.nonlinear import fused  # noqa: E402
from metarep.nonlinear.backend import Net  # noqa: E402
from metarep.nonlinear.metrics import input_gradients  # noqa: E402
from metarep.nonlinear.model import MLPParams, MLPSpec, features, init_mlp_params  # noqa: E402

BODY4 = ("W1", "b1", "W2", "b2", "W3", "b3")


def _forward(p, X, activation):
    """An independent forward pass of any depth: one task, plain torch."""
    h = X
    i = 1
    while f"W{i}" in p:
        h = h @ p[f"W{i}"].T + p.get(f"b{i}", 0.0)
        h = h.relu() if activation == "relu" else h
        i += 1
    return h @ p["w"]


def _loss(p, X, y, activation):
    return 0.5 * ((_forward(p, X, activation) - y) ** 2).mean()


def reference_gradient(params, tasks, *, activation, alpha, adapt_body, exact):
    """(1/N) sum_i of each task's outer gradient after one inner step, one task at a time."""
    leaves = {k: torch.tensor(v, requires_grad=True) for k, v in {**params.body(), "w": params.w}.items()}
    total = {k: torch.zeros_like(v) for k, v in leaves.items()}
    names = list(leaves) if adapt_body else ["w"]
    for i in range(tasks.n_tasks):
        X, y = torch.tensor(tasks.X_in[i]), torch.tensor(tasks.y_in[i])
        g = torch.autograd.grad(_loss(leaves, X, y, activation), [leaves[k] for k in names], create_graph=exact)
        theta = {**leaves, **{k: leaves[k] - alpha * gk for k, gk in zip(names, g)}}
        if not exact:
            theta = {k: v.detach().requires_grad_() for k, v in theta.items()}
        at = leaves if exact else theta
        outer = _loss(theta, torch.tensor(tasks.X_out[i]), torch.tensor(tasks.y_out[i]), activation)
        for k, gk in zip(at, torch.autograd.grad(outer, list(at.values()))):
            total[k] += gk / tasks.n_tasks
    return {k: v.numpy() for k, v in total.items()}


def _four_layers(bias, *, seed=0, d=6, hidden=5, width=4):
    spec = MLPSpec(d=d, width=width, layers=4, hidden=hidden, bias=bias)
    params = init_mlp_params(spec, init_scale=1.0, init_head_scale=1.0, rng=np.random.default_rng(seed))
    if bias:  # nonzero biases, so that their gradients are exercised
        rng = np.random.default_rng(seed + 1)
        params = params._replace(**{b: 0.3 * rng.standard_normal(getattr(params, b).shape) for b in ("b1", "b2", "b3")})
    return params


def _tasks(N=5, d=6, seed=3):
    problem = make_problem(d, 2, task_cov=1.0, noise_std=0.5, rng=np.random.default_rng(seed), teacher="relu")
    return sample_tasks(problem, N, 4, 3, np.random.default_rng(seed + 1))


def test_four_layer_init_shapes_scales_draw_order_and_fields():
    spec = MLPSpec(d=40, width=30, layers=4, hidden=60, bias=True)
    p = init_mlp_params(spec, init_scale=2.0, init_head_scale=1.0, rng=np.random.default_rng(0))
    assert p._fields == (*BODY4, "w") and p.layers == 4 and p.width == 30
    assert [a.shape for a in p] == [(60, 40), (60,), (60, 60), (60,), (30, 60), (30,), (30,)]
    assert abs(p.W1.var() * 40 / 4 - 1) < 0.1 and abs(p.W2.var() * 60 / 4 - 1) < 0.1
    assert abs(p.W3.var() * 60 / 4 - 1) < 0.1 and not any(p._asdict()[b].any() for b in ("b1", "b2", "b3"))
    # the draws in layer order: with hidden = width a four-layer network begins with a three-layer one's W1, W2
    three = init_mlp_params(MLPSpec(d=7, width=5, layers=3, hidden=5), init_scale=1.0, init_head_scale=1.0,
                            rng=np.random.default_rng(1))
    four = init_mlp_params(MLPSpec(d=7, width=5, layers=4, hidden=5), init_scale=1.0, init_head_scale=1.0,
                           rng=np.random.default_rng(1))
    np.testing.assert_array_equal(four.W1, three.W1)
    np.testing.assert_array_equal(four.W2, three.W2)
    assert set(four.body()) == {"W1", "W2", "W3"} and four.b3.shape == (0,)
    # saved and loaded by name, as the checkpoints and params.npz do
    back = MLPParams(**{k: np.asarray(v) for k, v in p._asdict().items()})
    assert back._fields == p._fields and all(np.array_equal(a, b) for a, b in zip(back, p))
    assert pickle.loads(pickle.dumps(p))._fields == p._fields
    assert MLPParams.from_parts(four.body(), four.w)._fields == four._fields


@pytest.mark.parametrize("method", ["fo-anil", "maml"])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("activation", ["relu", "identity"])
def test_meta_gradients_of_four_layers_match_per_task_autograd(method, bias, activation):
    """Through the methods' declared gradients: FO-ANIL's compiled CPU pass does not apply to four
    layers, so it falls back on the torch path."""
    params, tasks = _four_layers(bias), _tasks()
    declared = get_method(method, "mlp")
    adapt_body = declared.gradient.per_task_body
    assert not fused.applies(params, device="cpu", dtype="float64", inner_steps=1, adapt_body=adapt_body)
    grads, loss = declared.gradient(params, tasks, net=Net(activation), alpha=0.3)
    ref = reference_gradient(params, tasks, activation=activation, alpha=0.3, adapt_body=adapt_body,
                             exact=method == "maml")
    got = {**grads.body(), "w": grads.w}
    assert grads._fields == params._fields and set(got) == set(ref) >= {"W3", "w"}
    for k in ref:
        assert np.abs(ref[k]).max() > 1e-3
        np.testing.assert_allclose(got[k], ref[k], rtol=0, atol=1e-10 * max(1.0, np.abs(ref[k]).max()))
    assert np.isfinite(loss) and loss > 0


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("activation", ["relu", "identity"])
def test_input_gradients_of_four_layers_match_autograd(bias, activation):
    params = _four_layers(bias, seed=4)
    X = np.random.default_rng(5).standard_normal((7, 6))
    Xt = torch.tensor(X, requires_grad=True)
    f = _forward({k: torch.tensor(v) for k, v in {**params.body(), "w": params.w}.items()}, Xt, activation)
    expected, = torch.autograd.grad(f.sum(), Xt)
    np.testing.assert_allclose(input_gradients(params, X, activation), expected.numpy(), rtol=1e-12, atol=1e-14)


def test_the_identity_network_without_bias_is_the_product_of_its_layers():
    p = _four_layers(False, seed=6)
    X = np.random.default_rng(7).standard_normal((9, 6))
    B = p.W1.T @ p.W2.T @ p.W3.T                                       # (d, width): f(x) = x^T B w
    np.testing.assert_allclose(features(X, p.body(), "identity"), X @ B, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(input_gradients(p, X, "identity"), np.tile(B @ p.w, (9, 1)), rtol=1e-12, atol=1e-14)
    f, _ = forward(per_task(p.body(), p.w, 1), X[None], "identity")
    np.testing.assert_allclose(f[0], X @ B @ p.w, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("bias,activation", [(True, "relu"), (False, "identity")])
def test_test_time_gradients_of_four_layers_match_autograd(bias, activation):
    params, rng = _four_layers(bias, seed=8, d=1), np.random.default_rng(9)
    P = per_task(params.body(), params.w, 3)
    P = {k: v + 0.1 * rng.standard_normal(v.shape) for k, v in P.items()}   # tasks differ
    X, y = rng.uniform(-5, 5, (3, 4, 1)), rng.standard_normal((3, 4))
    ours = gradient(P, X, y, activation, body=True)
    assert set(ours) == set(P)
    for t in range(3):
        leaves = {k: torch.tensor(v[t], requires_grad=True) for k, v in P.items()}
        _loss(leaves, torch.tensor(X[t]), torch.tensor(y[t]), activation).backward()
        for k, v in leaves.items():
            np.testing.assert_allclose(ours[k][t], v.grad.numpy(), rtol=1e-10, atol=1e-12)
    moved = adapt(P, X, y, activation=activation, alpha=0.1, steps=1, body=True)
    assert all(not np.array_equal(moved[k], P[k]) for k in P)


def test_config_takes_any_depth_from_two():
    config = validate({"model": {"arch": "mlp", "layers": 6, "hidden": 3}, "method": {"name": "fo-anil"}})
    assert config.model.options.layers == 6 and config.model.options.hidden == 3
    with pytest.raises(ConfigError, match=r"model.layers.*greater than or equal to 2") as err:
        validate({"model": {"arch": "mlp", "layers": 1}})
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="layers = 3 or more"):
        validate({"model": {"arch": "mlp", "layers": 2, "hidden": 3}})
    # the memory estimate counts every layer: (L - 2) h + k' units,
    # h (d + 1) + (L - 3) h (h + 1) + k' (h + 2) parameters
    c = validate({"model": {"arch": "mlp", "layers": 5, "hidden": 30, "width": 7}, "method": {"name": "maml"},
                  "train": {"tasks": 100}})
    t, h, k, d = c.train, 30, 7, c.problem.d
    units, n_params = 3 * h + k, h * (d + 1) + 2 * h * (h + 1) + k * (h + 2)
    per_task = 100 * n_params * 4 * (t.inner_steps + 1)
    assert estimate_bytes(c)["working"] == (100 * (t.m_in + t.m_out) * units * (4 + 2 * t.inner_steps) + per_task) * 8


SINUSOID = {"problem": {"family": "sinusoid", "test_tasks": 30},
            "model": {"arch": "mlp", "layers": 4, "hidden": 6, "width": 5, "bias": True, "init_head_scale": 1.0},
            "train": {"optimizer": "adam", "tasks": "online", "batch_tasks": 5, "m_in": 5, "m_out": 5, "alpha": 0.02,
                      "beta": 0.01, "steps": 6, "log_every": 3},
            "test": {"tasks": 20, "m_test": 5}}


@pytest.mark.parametrize("method", ["maml", "fo-anil"])
def test_a_four_layer_sinusoid_run_reports_its_metrics(tmp_path, method):
    result = metarep.run({**SINUSOID, "method": {"name": method}}, out=tmp_path / "run")
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert s["status"] == "completed"
    fam = s["test"]["family"]
    assert all(np.isfinite(v) for per_k in fam["mse"].values() for v in per_k.values())
    assert 0 <= s["final"]["span_outside"] <= 1 and np.isfinite(s["final"]["effective_rank"])
    assert result.params["W3"].shape == (5, 6) and result.params["b3"].shape == (5,)
    with np.load(tmp_path / "run" / "params.npz") as saved:
        assert {*BODY4, "w"} <= set(saved.files) and saved["W2"].shape == (6, 6)
