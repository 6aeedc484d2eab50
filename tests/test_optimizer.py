"""The outer optimizer seam (metarep.optimizers): plain gradient descent to the last bit, Adam
against the update written out here, kill and resume with Adam's state, the refusals."""

from __future__ import annotations

import random

import numpy as np
import pytest

from metarep import engine, optimizers
from metarep.config.schema import ConfigError, validate
from metarep.linear.params import Params, sgd_update
from metarep.running.execute import execute_run
from run_helpers import result_files, stop_after

LINEAR = {"problem": {"d": 6, "k": 2, "task_mean": [0.5, -0.5]}, "model": {"width": 5},
          "train": {"tasks": "inf", "m_in": 4, "steps": 7, "log_every": 1, "beta": 0.05, "seed": 3},
          "test": {"tasks": 20, "m_test": 4}}


def _config(base: dict, **train) -> object:
    c = {k: dict(v) for k, v in base.items()}
    c["train"] = {**c["train"], **train}
    return validate(c)


def _adam_reference(params, gradient, steps: int, *, lr: float, b1: float, b2: float, eps: float):
    """Adam (Kingma and Ba, Algorithm 1) written out on NumPy arrays: the parameters after each step."""
    p = [np.array(a, dtype=np.float64) for a in params]
    m = [np.zeros_like(a) for a in p]
    v = [np.zeros_like(a) for a in p]
    path = []
    for t in range(1, steps + 1):
        g = [np.asarray(a, dtype=np.float64) for a in gradient(type(params)(*p))]
        for i in range(len(p)):
            m[i] = b1 * m[i] + (1 - b1) * g[i]
            v[i] = b2 * v[i] + (1 - b2) * g[i] ** 2
            m_hat, v_hat = m[i] / (1 - b1 ** t), v[i] / (1 - b2 ** t)
            p[i] = p[i] - lr * m_hat / (np.sqrt(v_hat) + eps)
        path.append([a.copy() for a in p])
    return path


def test_gd_update_is_theta_minus_beta_grad_to_the_last_bit(rng):
    params = Params(rng.standard_normal((7, 4)), rng.standard_normal(4))
    grads = Params(rng.standard_normal((7, 4)) * 1e3, rng.standard_normal(4) * 1e-3)
    opt = optimizers.gd(0.37)
    updates, state = opt.update(grads, opt.init(params), params)
    new = opt.apply_updates(params, updates)
    for a, b in zip(new, sgd_update(params, grads, 0.37), strict=True):
        assert np.array_equal(a, b)
    assert state == {}


def test_gd_with_one_beta_per_run(rng):
    beta = np.array([0.1, 0.2, 0.3])
    params = Params(rng.standard_normal((3, 5, 4)), rng.standard_normal((3, 4)))
    grads = Params(rng.standard_normal((3, 5, 4)), rng.standard_normal((3, 4)))
    opt = optimizers.gd(beta)
    new = opt.apply_updates(params, opt.update(grads, {}, params)[0])
    for s in range(3):
        assert np.array_equal(new.B[s], params.B[s] - beta[s] * grads.B[s])
        assert np.array_equal(new.w[s], params.w[s] - beta[s] * grads.w[s])


def test_gd_run_is_plain_gradient_descent_to_the_last_bit():
    """The engine's default run = theta <- theta - beta grad written out, bit for bit."""
    cfg = _config(LINEAR)
    exp = engine.build(cfg)
    state = engine.train(exp, exp.initial_state())
    p = exp.initial_state().params
    for _ in range(cfg.train.steps):
        grads, _ = exp.method.population_gradient(p, exp.problem, alpha=cfg.train.alpha, m_in=float(cfg.train.m_in))
        p = Params(p.B - cfg.train.beta * grads.B, p.w - cfg.train.beta * grads.w)
    assert np.array_equal(state.params.B, p.B) and np.array_equal(state.params.w, p.w)


@pytest.mark.parametrize("regime", ["inf", 12])
def test_adam_matches_the_update_written_out(regime):
    lr, b1, b2, eps = 0.05, 0.8, 0.99, 1e-6
    cfg = _config(LINEAR, tasks=regime, optimizer="adam", adam_betas=[b1, b2], adam_eps=eps, beta=lr)
    exp = engine.build(cfg)
    state = engine.train(exp, exp.initial_state())
    assert state.status == "completed" and int(state.opt_state["count"]) == cfg.train.steps
    start = exp.initial_state().params
    path = _adam_reference(start, lambda p: exp.gradient(p, None)[1], cfg.train.steps, lr=lr, b1=b1, b2=b2, eps=eps)
    for got, want in zip(state.params, path[-1], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    # the logged rows are those of the reference path (row t: the parameters after t steps)
    sv = [np.linalg.svd(p[0], compute_uv=False)[0] for p in path]
    np.testing.assert_allclose([row["sv_0"] for row in state.history[1:]], sv, rtol=1e-12)
    assert not np.allclose(path[-1][0], engine.train(exp := engine.build(_config(LINEAR, tasks=regime)),
                                                     exp.initial_state()).params.B)


def test_adam_on_the_network_matches_the_update_written_out():
    pytest.importorskip("torch")
    lr, b1, b2, eps = 0.02, 0.9, 0.999, 1e-8
    cfg = validate({"problem": {"d": 5, "k": 2}, "model": {"arch": "mlp", "width": 4, "layers": 3, "hidden": 6},
                    "method": {"name": "fo-maml"},
                    "train": {"tasks": 10, "m_in": 4, "m_out": 4, "steps": 5, "log_every": 5, "beta": lr,
                              "optimizer": "adam"}, "test": {"tasks": 10, "m_test": 4}})
    exp = engine.build(cfg)
    state = engine.train(exp, exp.initial_state())
    start = exp.initial_state().params

    def gradient(p):
        return exp.to_host(exp.gradient(exp.to_device(p), None)[1])

    path = _adam_reference(start, gradient, cfg.train.steps, lr=lr, b1=b1, b2=b2, eps=eps)
    for got, want in zip(state.params, path[-1], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_adam_state_is_pure(rng):
    pytest.importorskip("torch")
    params = Params(rng.standard_normal((3, 2)), rng.standard_normal(2))
    grads = Params(rng.standard_normal((3, 2)), rng.standard_normal(2))
    opt = optimizers.adam(0.1)
    state = opt.init(params)
    before = {k: np.array(v) for k, v in state.items()}
    first, new = opt.update(grads, state, params)
    again, _ = opt.update(grads, state, params)
    assert all(np.array_equal(state[k], before[k]) for k in state) and int(new["count"]) == 1
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))


CONFIG = """[problem]
d = 5
k = 2
[model]
width = 4
[method]
name = "{method}"
[train]
tasks = {tasks}
m_in = 4
m_out = 4
steps = 30
log_every = 4
checkpoint_every = {every}
optimizer = "adam"
adam_betas = [0.8, 0.95]
beta = 0.02
[test]
m_test = 4
tasks = 20
"""


@pytest.mark.parametrize("method,tasks", [("fo-anil", '"inf"'), ("fo-anil", '"online"'),
                                          ("burer-monteiro", "8")])
@pytest.mark.parametrize("every", [0, 7])
def test_adam_interrupted_anywhere_resume_is_bit_identical(tmp_path, method, tasks, every):
    config = tmp_path / "adam.toml"
    config.write_text(CONFIG.format(method=method, tasks=tasks, every=every))
    assert execute_run(config, [], tmp_path / "reference", figure=False).status == "completed"
    out = tmp_path / "run"
    rng = random.Random(every)
    result = execute_run(config, [], out, figure=False, should_stop=stop_after(rng.randint(2, 12)))
    while result.status == "interrupted":
        result = execute_run(None, [], None, resume=out, figure=False, should_stop=stop_after(rng.randint(2, 12)))
    assert result.status == "completed"
    assert result_files(out) == result_files(tmp_path / "reference")


def test_adam_refused_for_a_population_batch():
    from metarep.models.linear_batch import population_batch

    with pytest.raises(ValueError, match="optimizer"):
        population_batch([_config(LINEAR, optimizer="adam"), _config(LINEAR, optimizer="adam", seed=4)])


def test_optimizer_keys_are_validated():
    with pytest.raises(ConfigError, match="train.optimizer"):
        validate({"train": {"optimizer": "sgd"}})
    with pytest.raises(ConfigError, match="train.adam_betas"):
        validate({"train": {"optimizer": "adam", "adam_betas": [0.9, 1.0]}})
