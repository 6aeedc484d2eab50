"""family = "sinusoid" (MAML's sinusoid regression): its draws, its oracle, the energy outside
span{1, sin x, cos x}, the test-time steps of the network, and a run end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import metarep
from metarep.cli import main
from metarep.config.schema import ConfigError, validate
from metarep.families import get_family
from metarep.families.measures import span_outside
from metarep.families.network import adapt, forward, gradient, per_task
from metarep.nonlinear.metrics import track
from metarep.nonlinear.model import MLPParams

FAMILY = get_family("sinusoid")
NET = {"arch": "mlp", "layers": 3, "hidden": 8, "width": 8, "bias": True, "init_head_scale": 1.0}


def truth(noise_std=0.0, **options):
    return validate({"problem": {"family": "sinusoid", "noise_std": noise_std, **options}, "model": NET}).problem


def make(noise_std=0.0, **options):
    return FAMILY.make(truth(noise_std, **options), None)


def test_tasks_are_a_sin_of_x_plus_phi_with_the_heads_moments():
    t = make(0.0, amplitude=[0.5, 2.0], phase=[0.2, 2.5], input_range=[-3.0, 4.0])
    tasks = FAMILY.sample_tasks(t, 40000, 3, 2, np.random.default_rng(0))
    a, phi = np.hypot(*tasks.w_star.T), np.arctan2(tasks.w_star[:, 1], tasks.w_star[:, 0])
    assert a.min() >= 0.5 and a.max() <= 2.0 and phi.min() >= 0.2 and phi.max() <= 2.5
    assert tasks.X_in.min() >= -3 and tasks.X_in.max() <= 4 and tasks.X_in.shape == (40000, 3, 1)
    np.testing.assert_allclose(tasks.y_in, a[:, None] * np.sin(tasks.X_in[..., 0] + phi[:, None]), atol=1e-12)
    # the closed-form moments against Monte Carlo (s.e. of each entry below 0.01)
    np.testing.assert_allclose(tasks.w_star.mean(axis=0), t.mu_star, atol=0.03)
    np.testing.assert_allclose(np.cov(tasks.w_star.T), t.Sigma_star, atol=0.03)


def test_label_noise_has_the_asked_std():
    tasks = FAMILY.sample_tasks(make(0.3), 5000, 4, 4, np.random.default_rng(1))
    clean = np.einsum("nmk,nk->nm", make().teacher_features(tasks.X_out), tasks.w_star)
    assert abs((tasks.y_out - clean).std() - 0.3) < 0.01


def test_the_oracle_is_exact_without_noise_and_the_linear_posterior_mean_with_it():
    tasks = FAMILY.sample_tasks(make(), 50, 5, 0, np.random.default_rng(2))
    np.testing.assert_allclose(FAMILY.oracle(make(), tasks.X_in, tasks.y_in), tasks.w_star, atol=1e-10)
    t = make(1.0)
    tasks = FAMILY.sample_tasks(t, 20, 5, 0, np.random.default_rng(3))
    heads = FAMILY.oracle(t, tasks.X_in, tasks.y_in)
    for i in range(20):   # one task at a time: (Sigma^-1 + F^T F / s^2)^-1 (Sigma^-1 mu + F^T y / s^2)
        F = np.stack([np.sin(tasks.X_in[i, :, 0]), np.cos(tasks.X_in[i, :, 0])], axis=1)
        P = np.linalg.inv(t.Sigma_star)
        np.testing.assert_allclose(heads[i], np.linalg.solve(P + F.T @ F, P @ t.mu_star + F.T @ tasks.y_in[i]))


def test_span_outside_is_zero_in_the_span_and_the_chance_share_for_random_features():
    x = np.linspace(-5, 5, 1000)[:, None]
    S = FAMILY.span(make(), x)
    inside = np.hstack([np.sin(x), 3 * np.cos(x) - 1, np.ones_like(x), np.sin(x) + 2 * np.cos(x)])
    assert span_outside(inside, S) < 1e-20
    rng = np.random.default_rng(4)
    shares = [span_outside(rng.standard_normal((1000, 40)), S) for _ in range(20)]
    assert abs(np.mean(shares) - (1000 - 3) / 1000) < 1e-3     # E share = (n - r) / n for isotropic noise
    Phi = np.hstack([inside, np.abs(x), x ** 2])
    coef = np.linalg.lstsq(S, Phi, rcond=None)[0]                # an independent projection, column by column
    expected = ((Phi - S @ coef) ** 2).sum() / (Phi ** 2).sum()
    assert span_outside(Phi, S) == pytest.approx(expected, rel=1e-10)


def test_a_network_with_constant_features_has_no_energy_outside_the_span():
    t = make()
    params = MLPParams(np.zeros((8, 1)), np.ones(8), np.zeros(0), np.zeros(0), np.ones(8))
    row = track(params, t, FAMILY.probe(t, 0, None), "relu")
    assert row["span_outside"] < 1e-20 and set(row) >= {"effective_rank", "phi_eigenvalues"}
    assert abs(row["r2"]) < 1e-12          # a constant keeps nothing of (sin x, cos x)
    params = MLPParams(np.ones((8, 1)), np.linspace(-4, 4, 8), np.zeros(0), np.zeros(0), np.ones(8))
    assert 0.01 < track(params, t, FAMILY.probe(t, 0, None), "relu")["span_outside"] < 1


@pytest.mark.parametrize("layers,bias,activation", [(3, True, "relu"), (2, False, "relu"), (3, False, "identity")])
def test_test_time_gradients_match_autograd(layers, bias, activation):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    T, K, n1, width = 3, 4, 5, 6
    body = {"W1": rng.standard_normal((n1 if layers == 3 else width, 1))}
    if bias:
        body["b1"] = rng.standard_normal(body["W1"].shape[0])
    if layers == 3:
        body["W2"] = rng.standard_normal((width, n1))
        if bias:
            body["b2"] = rng.standard_normal(width)
    P = per_task(body, rng.standard_normal(width), T)
    P = {k: v + 0.1 * rng.standard_normal(v.shape) for k, v in P.items()}   # tasks differ
    X, y = rng.uniform(-5, 5, (T, K, 1)), rng.standard_normal((T, K))
    ours = gradient(P, X, y, activation, body=True)
    for t in range(T):
        leaves = {k: torch.tensor(v[t], requires_grad=True) for k, v in P.items()}
        h = torch.tensor(X[t])
        for W, b in (("W1", "b1"), ("W2", "b2")):
            if W in leaves:
                h = h @ leaves[W].T + leaves.get(b, 0)
                h = h if activation == "identity" else h.relu()
        loss = 0.5 * ((h @ leaves["w"] - torch.tensor(y[t])) ** 2).mean()
        loss.backward()
        for k, v in leaves.items():
            np.testing.assert_allclose(ours[k][t], v.grad.numpy(), rtol=1e-10, atol=1e-12)
    head_only = adapt(P, X, y, activation=activation, alpha=0.1, steps=2, body=False)
    assert all(np.array_equal(head_only[k], P[k]) for k in body)
    f, _ = forward(P, X, activation)
    f2, _ = forward(adapt(P, X, y, activation=activation, alpha=1e-3, steps=1, body=True), X, activation)
    assert ((f2 - y) ** 2).sum() < ((f - y) ** 2).sum()


def test_the_linear_arch_and_the_network_oracle_are_refused_with_one_line(tmp_path, capsys):
    with pytest.raises(ConfigError, match="runs on model.arch = 'mlp', not 'linear'"):
        validate({"problem": {"family": "sinusoid"}})
    with pytest.raises(ConfigError, match="method 'oracle' cannot draw the true features"):
        validate({"problem": {"family": "sinusoid"}, "model": NET, "method": {"name": "oracle"}})
    path = tmp_path / "c.toml"
    path.write_text('[problem]\nfamily = "sinusoid"\n')
    assert main(["run", str(path), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.arch" in err[0]


SMALL = {"problem": {"family": "sinusoid", "test_tasks": 60}, "model": NET, "method": {"name": "maml"},
         "train": {"optimizer": "adam", "tasks": "online", "batch_tasks": 5, "m_in": 5, "m_out": 5, "alpha": 0.02,
                   "beta": 0.01, "steps": 20, "log_every": 10},
         "test": {"tasks": 40, "m_test": 5}}


def test_a_maml_run_with_adam_reports_the_benchmark_and_the_span(tmp_path):
    result = metarep.run(SMALL, out=tmp_path / "run")
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    fam = s["test"]["family"]
    assert fam["name"] == "sinusoid" and fam["adapts"] == "every layer" and fam["tasks"] == 60
    assert set(fam["mse"]) == {"5", "10", "20"} and all(set(v) == {"0", "1", "10"} for v in fam["mse"].values())
    assert all(v < 1e-20 for v in fam["oracle_mse"].values())          # noiseless: the oracle interpolates
    assert fam["mse"]["5"]["0"] == fam["mse"]["20"]["0"]               # no step: K does not matter
    assert 0 <= s["final"]["span_outside"] <= 1
    assert "span_outside" in (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0]
    assert (tmp_path / "run" / "metrics.png").stat().st_size > 0
    assert result.problem is None   # the ranges in the config are the whole truth


def test_head_only_methods_adapt_the_head_at_test_time(tmp_path):
    fam = metarep.run({**SMALL, "method": {"name": "fo-anil"}}).summary["test"]["family"]
    assert fam["adapts"] == "head"
    assert math.isfinite(fam["mse"]["10"]["10"])


def test_the_reproduction_grid_covers_every_cell_and_validates():
    from metarep.methods import get_method
    from metarep.reproduce.sinusoid import load, make_jobs

    data, study = load(quick=False)
    jobs = make_jobs(data, study)
    table = [j for j in jobs if j["kind"] == "table"]
    assert len(table) == len(study["methods"]) * len(study["shots"]) * len(study["noise"]) * study["seeds"]
    assert {j["K"] for j in table} == {5, 10, 20} and {j["noise"] for j in table} == {0.0, 0.3, 1.0}
    assert study["seeds"] >= 5 and data["problem"]["test_tasks"] >= 1000 and data["test"]["tasks"] >= 1000
    for j in table:
        c = j["config"]
        assert c["train"]["m_in"] == c["train"]["m_out"] == c["test"]["m_test"] == j["K"]
        fixed = get_method(j["method"], "mlp").per_task_state
        assert (c["train"]["tasks"] == study["pretrain_tasks"]) if fixed else (c["train"]["tasks"] == "online")
    assert sum(j["keep_params"] for j in jobs) == len(study["figure_methods"])


def test_the_cli_prints_the_mse_per_k_and_the_energy_outside_the_span(tmp_path, capsys):
    import tomli_w

    path = tmp_path / "s.toml"
    small = {**SMALL, "train": {**SMALL["train"], "steps": 5, "log_every": 5}, "test": {"tasks": 20, "m_test": 5}}
    path.write_bytes(tomli_w.dumps(small).encode())
    assert main(["run", str(path), "--out", str(tmp_path / "r")]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert "span_outside" in line and "sinusoid MSE after 1 / 10 steps: K = 5" in line and "K = 20" in line
