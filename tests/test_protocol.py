"""The test-time protocol: validation tasks (their own stream, or a split of a table's training
tasks), test.adapt = "tuned" (a choice made on validation tasks only), the network's test risk,
and the evaluation's progress hooks."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

import metarep
import metarep.engine
from metarep import seeds
from metarep.config.schema import ConfigError, validate
from metarep.data import table_source
from metarep.engine import build, evaluate_final, sources, train, tuning
from metarep.families.problem import sample_tasks
from metarep.linear.adapt import empirical_prior, expected_excess_risk_one_step
from metarep.linear.params import Params
from metarep.linear.random_effects import stacked_stats
from metarep.methods import get_method
from metarep.nonlinear.evaluate import excess_risk, feature_moments, feature_prior, moment_risk
from metarep.nonlinear.model import MLPParams

SMALL = {"problem": {"d": 6, "k": 2}, "model": {"width": 4}, "train": {"tasks": 100, "steps": 20}}
TUNED = {"adapt": "tuned", "tasks": 300, "validation_tasks": 200, "tune_steps": [0, 1, 5], "tune_alpha": [0.1, 0.3],
         "tune_ridge": [1e-2, 1.0]}


def config(**sections):
    return validate({**SMALL, **sections})


def random_linear(d=6, width=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((d, width)) / np.sqrt(d), 0.3 * rng.standard_normal(width)


def test_validation_stream_is_its_own():
    ids = list(seeds.STREAMS.values())
    assert len(set(ids)) == len(ids)
    c = config(train={**SMALL["train"], "seed": 1}, test={"seed": 1, **TUNED})
    problem = sources.synthetic_problem(c)
    draw = {s: sample_tasks(problem, 5, 20, 0, seeds.rng(1, s)).X_in for s in ("validation_tasks", "test_tasks",
                                                                               "train_tasks")}
    assert not np.allclose(draw["validation_tasks"], draw["test_tasks"])
    assert not np.allclose(draw["validation_tasks"], draw["train_tasks"][:, :20])


def test_tuned_keeps_the_default_rules_scores_and_chooses_the_lowest_validation_mean():
    B, w = random_linear()
    source = build(config()).source
    default = source.evaluate(B, w, config(test={"tasks": 300}))
    tuned = source.evaluate(B, w, config(test=TUNED))
    t = tuned["tuned"]
    assert default["tuned"] is None
    assert t["default"]["excess_risk"] == default["excess_risk"]  # the same test tasks, the same fit
    assert (t["default"]["adapt"], t["default"]["adapt_steps"]) == ("gradient", 1)
    assert t["validation"] <= t["default"]["validation"]
    assert t["candidates"] == 3 * 2 + 2 + 1 + 1  # steps x alphas (one step of 0.1: the default), ridges, lstsq, bayes
    assert tuned["excess_risk"] == t["excess_risk"] and tuned["adapt"] == t["adapt"]
    assert t["validation_tasks"] == 200


def test_choice_never_sees_the_test_tasks(monkeypatch):
    """Garbage labels on the test tasks change the test scores, never the choice."""
    B, w = random_linear()
    c = config(test=TUNED)
    source = build(config()).source
    clean = source.evaluate(B, w, c)["tuned"]
    original = sources.chunked_scores

    def garbage_test_labels(problem, rules, cfg, which, progress, score_chunk):
        def scrambled(rules, tasks):
            if which == "test":
                tasks = dataclasses.replace(tasks, y_in=50 * np.random.default_rng(0).standard_normal(tasks.y_in.shape))
            return score_chunk(rules, tasks)
        return original(problem, rules, cfg, which, progress, scrambled)

    monkeypatch.setattr(sources, "chunked_scores", garbage_test_labels)
    dirty = source.evaluate(B, w, c)["tuned"]
    assert dirty["excess_risk"] > 10 * clean["excess_risk"]
    assert {k: dirty[k] for k in ("adapt", "adapt_steps", "alpha", "ridge", "validation")} == \
        {k: clean[k] for k in ("adapt", "adapt_steps", "alpha", "ridge", "validation")}


def test_choose_skips_non_finite_means_and_keeps_the_first_on_ties():
    assert tuning.choose(np.array([np.nan, 2.0, np.inf, 1.0, 1.0])) == 3
    assert tuning.choose(np.array([np.nan, np.inf])) == 0


def test_progress_hooks_count_tasks_and_stop_between_chunks(monkeypatch):
    monkeypatch.setattr(sources, "TEST_CHUNK", 64)
    B, w = random_linear()
    source = build(config()).source
    seen = []
    source.evaluate(B, w, config(test=TUNED), on_chunk=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (500, 500) and len(seen) == 4 + 5
    assert all(a[0] < b[0] for a, b in zip(seen, seen[1:]))
    polls = []

    def stop_on_third():
        polls.append(1)
        return len(polls) == 3

    with pytest.raises(KeyboardInterrupt):
        source.evaluate(B, w, config(test=TUNED), should_stop=stop_on_third)
    assert len(polls) == 3


def test_tune_keys_apply_only_when_tuned():
    with pytest.raises(ConfigError, match="test.tune_ridge applies only with test.adapt"):
        config(test={"tune_ridge": [1.0]})
    c = config(test={"adapt": "tuned"})
    assert c.test.tune_steps == [1, 2, 5, 10, 20] and c.test.n_validation == 500
    assert c.to_dict()["test"]["tune_rules"] == ["gradient", "ridge", "lstsq", "bayes"]
    assert "tune_rules" not in config().to_dict()["test"]  # default runs' config is unchanged


def test_mlp_moment_risk_is_the_monte_carlo_average_on_the_same_inputs():
    c = validate({**SMALL, "model": {"arch": "mlp", "width": 4, "layers": 3, "bias": True}})
    exp = build(c)
    params = exp.initial_state().params
    tasks = sample_tasks(exp.problem, 7, 20, 0, np.random.default_rng(1))
    heads = np.random.default_rng(2).standard_normal((7, 4))
    M = feature_moments(params, exp.problem, "relu", np.random.default_rng(3), n=3000, block=3000)
    X = np.random.default_rng(3).standard_normal((3000, 6))
    np.testing.assert_allclose(moment_risk(heads, tasks.w_star, M),
                               excess_risk(params, heads, exp.problem, tasks.w_star, X, "relu"), rtol=1e-10)


def test_identity_network_scores_the_linear_closed_form():
    """The identity network without bias, W1 = B^T and head w, is the linear model: its test risk
    (fresh inputs, one gradient step) meets the linear closed form within its standard error."""
    c = validate({**SMALL, "model": {"arch": "mlp", "width": 4, "activation": "identity", "bias": False},
                  "test": {"tasks": 1000}})
    exp = build(c)
    B, w = random_linear()
    empty = np.zeros(0)
    test = exp.evaluate(MLPParams(B.T.copy(), empty, empty, empty, w))
    closed = expected_excess_risk_one_step(B, w, exp.problem, alpha=c.test_alpha, m_test=c.test.m_test)
    assert abs(test["excess_risk"] - closed) < 2 * test["excess_risk_se"]
    linear = build(config(test={"tasks": 1000})).source.evaluate(B, w, config(test={"tasks": 1000}))
    assert test["excess_risk"] == pytest.approx(linear["excess_risk"], rel=0.005)  # the same tasks
    # The inputs' error, shared by every task, is far below the s.e.: E[psi psi^T] is known here.
    psi = np.vstack([B.T, exp.problem.B_star.T])
    M = feature_moments(MLPParams(B.T.copy(), empty, empty, empty, w), exp.problem, "identity",
                        seeds.rng(c.test.seed, "eval_inputs"))
    assert np.linalg.norm(M - psi @ psi.T) / np.linalg.norm(psi @ psi.T) < 0.01


def check_tuned_summary(test: dict, key: str):
    t = test["tuned"]
    assert t["adapt"] in ("gradient", "ridge", "lstsq", "bayes")
    assert t[key] == test[key] and np.isfinite(t["validation"]) and np.isfinite(t[f"{key}_se"])
    assert t["default"]["adapt"] == "gradient" and np.isfinite(t["default"]["validation"])
    assert np.isfinite(t["default"][key]) and t["validation"] <= t["default"]["validation"]
    chosen = {"gradient": ("adapt_steps", "alpha"), "ridge": ("ridge",), "lstsq": (), "bayes": ()}[t["adapt"]]
    assert all(t[k] is not None for k in chosen)


def test_tuned_mlp_run_names_its_choice_in_summary_json(tmp_path):
    c = validate({**SMALL, "model": {"arch": "mlp", "width": 4}, "train": {"tasks": 50, "steps": 5},
                  "test": {**TUNED, "tasks": 100, "validation_tasks": 100}})
    metarep.run(c, out=tmp_path / "run")
    check_tuned_summary(json.loads((tmp_path / "run" / "summary.json").read_text())["test"], "excess_risk")


def write_table(tmp_path, n_tasks=40):
    rng = np.random.default_rng(0)
    sizes = rng.integers(25, 40, size=n_tasks)
    task = np.repeat(np.arange(n_tasks), sizes)
    X = rng.standard_normal((len(task), 3)) + 2.0
    heads = rng.standard_normal((n_tasks, 3))
    frame = pd.DataFrame(X, columns=["a", "b", "c"])
    frame.insert(0, "school", [f"s{t}" for t in task])
    frame["y"] = np.einsum("rd,rd->r", X, heads[task]) + 0.3 * rng.standard_normal(len(task))
    frame.to_csv(tmp_path / "t.csv", index=False)
    return {"path": str(tmp_path / "t.csv"), "task": "school", "target": "y"}


def test_table_validation_split_is_disjoint_and_left_out_of_the_statistics(tmp_path):
    data = write_table(tmp_path)
    base = {"model": {"width": 3}, "train": {"m_in": 5, "m_out": 5, "steps": 5}}
    tuned = table_source(validate({**base, "data": data, "test": {"adapt": "tuned"}})).data
    plain = table_source(validate({**base, "data": data})).data
    assert tuned.validation is not None and plain.validation is None
    train, val, held = (set(s.names) for s in (tuned.train, tuned.validation, tuned.heldout))
    assert not train & val and not train & held and not val & held
    assert held == set(plain.heldout.names) and train | val == set(plain.train.names)  # split off the training tasks
    assert len(val) == round(0.2 * 32) == tuned.counts["validation_tasks"]
    np.testing.assert_allclose(tuned.train.X[:, :3].mean(axis=0), 0, atol=1e-12)  # standardised on training rows
    assert np.abs(tuned.validation.X[:, :3].mean(axis=0)).max() > 1e-3
    with pytest.raises(ConfigError, match="data.validation_fraction applies only"):
        validate({**base, "data": {**data, "validation_fraction": 0.3}})
    with pytest.raises(ConfigError, match="test.validation_tasks does not apply"):
        validate({**base, "data": data, "test": {"adapt": "tuned", "validation_tasks": 10}})


def test_tuned_table_run_names_its_choice_in_summary_json(tmp_path):
    data = write_table(tmp_path)
    c = validate({"model": {"width": 3}, "train": {"m_in": 5, "m_out": 5, "steps": 10}, "data": data,
                  "test": {"adapt": "tuned", "m_test": 10, "tune_steps": [1, 5], "tune_alpha": [0.05, 0.1]}})
    metarep.run(c, out=tmp_path / "run")
    test = json.loads((tmp_path / "run" / "summary.json").read_text())["test"]
    check_tuned_summary(test, "mse")
    assert test["tuned"]["validation_tasks"] == test["data"]["validation_tasks"] == 6


def test_evaluate_final_passes_the_hooks_to_every_arch(monkeypatch):
    monkeypatch.setattr(sources, "TEST_CHUNK", 128)
    for model in ({"width": 4}, {"arch": "mlp", "width": 4}):
        exp = build(validate({**SMALL, "model": model, "train": {"tasks": 20, "steps": 1}, "test": {"tasks": 300}}))
        state = train(exp, exp.initial_state())
        seen: list[tuple[int, int]] = []
        evaluate_final(exp, state, on_chunk=lambda done, total, seen=seen: seen.append((done, total)))
        assert seen == [(128, 300), (256, 300), (300, 300)]
        with pytest.raises(KeyboardInterrupt):
            evaluate_final(exp, state, should_stop=lambda: True)


def test_bayes_in_the_grid_uses_the_empirical_prior_where_there_are_training_rows():
    B, w = random_linear()
    bayes = {**TUNED, "tune_rules": ["bayes"]}
    t = build(config()).source.evaluate(B, w, config(test=bayes))["tuned"]
    assert t["adapt"] == "bayes" and t["candidates"] == 2 and t["validation"] < t["default"]["validation"]
    population = config(train={"tasks": "inf", "m_in": "inf", "m_out": "inf"}, test=bayes)
    assert build(population).source.evaluate(B, w, population)["tuned"]["candidates"] == 1  # no rows: no prior


def test_network_prior_is_fitted_on_the_features_of_the_training_tasks():
    """The identity network with W1 = B^T has features X B: its prior on phi(X) is the linear
    model's empirical prior on X B (fitted through the projected raw statistics)."""
    c = validate({**SMALL, "model": {"arch": "mlp", "width": 4, "activation": "identity", "bias": False},
                  "test": {"adapt": "tuned"}})
    exp = build(c)
    B, w = random_linear()
    empty = np.zeros(0)
    prior = feature_prior(MLPParams(B.T.copy(), empty, empty, empty, w), "identity",
                          exp.source.prior_stats(c, lambda tasks: tasks))
    linear = empirical_prior(get_method("fo-anil"), Params(B, w), stacked_stats(exp.source.tasks))
    for a, b in zip(prior, linear):
        np.testing.assert_allclose(a, b, rtol=2e-3, atol=1e-6)  # EM stops within its tolerance


def test_a_prior_that_cannot_be_fitted_leaves_the_grid_not_the_run(monkeypatch):
    """When the random-effects fit fails (degenerate training rows), a tuned run goes on without
    "bayes"; a run that asks for "bayes" fails as any numerical failure does."""
    def failing_fit(*args, **kwargs):
        raise np.linalg.LinAlgError("Matrix is not positive definite")

    monkeypatch.setattr(sources, "empirical_prior", failing_fit)
    small = {**SMALL, "method": {"name": "none"}, "train": {"tasks": 10, "steps": 1}}
    _, state, summary = metarep.engine.run(validate({**small, "test": {"adapt": "tuned", "tasks": 5}}))
    assert state.status == "completed" and summary["test"]["tuned"]["candidates"] == 1 + 15 + 6  # lstsq: the default
    _, state, _ = metarep.engine.run(validate({**small, "test": {"adapt": "bayes", "tasks": 5}}))
    assert state.status == "diverged" and "numerical routine failed" in state.message
