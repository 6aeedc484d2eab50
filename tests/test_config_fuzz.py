"""Bad input, tried systematically (hypothesis): every invalid config is refused with one line
on stderr, exit status 2, no traceback and no output directory; every valid small config
(tiny sizes, few steps, any step size) ends 'completed' or 'diverged', never in an exception.

The number of invalid inputs tried is printed at the end of the module.
"""

from __future__ import annotations

import math
import tempfile
import tomllib
from pathlib import Path

import numpy as np
import pytest
import tomli_w
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from metarep.cli import main
from metarep.config.schema import ConfigError, validate
from metarep.methods import get_method, register, registered, unregister
from metarep.running.execute import execute_run

METHODS = {m.name: m for m in registered("linear")}

TRIED = {"invalid inputs": 0, "valid configs run": 0}
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow])

BASE = {"problem": {"d": 4, "k": 2, "noise_std": 0.5},
        "model": {"width": 3},
        "train": {"tasks": 6, "batch_tasks": 4, "m_in": 3, "m_out": 3, "steps": 3, "log_every": 1},
        "test": {"m_test": 3, "tasks": 5}}

POS_INT = {("problem", "d"), ("problem", "k"), ("model", "width"), ("train", "batch_tasks"),
           ("train", "log_every"), ("train", "inner_steps"), ("test", "m_test"), ("test", "tasks")}
NONNEG_INT = {("problem", "seed"), ("train", "steps"), ("train", "seed"), ("train", "checkpoint_every"),
              ("test", "adapt_steps"), ("test", "seed")}
POS_FLOAT = {("model", "init_scale"), ("train", "alpha"), ("train", "beta"), ("train", "diverge_threshold"),
             ("test", "alpha")}
NONNEG_FLOAT = {("problem", "noise_std"), ("model", "init_head_scale"), ("method", "lam"), ("test", "ridge")}
CHOICE = {("method", "name"): sorted(METHODS), ("method", "solver"): ["gd", "alternating"],
          ("test", "adapt"): ["default", "gradient", "ridge", "lstsq", "bayes"]}
INT_OR_WORD = {("train", "tasks"): ["inf", "online"], ("train", "m_in"): [], ("train", "m_out"): []}


@pytest.fixture(scope="module", autouse=True)
def report_counts(request):
    yield
    line = f"config fuzzing: {TRIED['invalid inputs']} invalid inputs tried, all refused with one line and " \
           f"exit 2; {TRIED['valid configs run']} valid random configs ran to completed/diverged"
    capman = request.config.pluginmanager.getplugin("capturemanager")
    if capman is None:
        print(line)
        return
    with capman.global_and_fixture_disabled():
        print("\n" + line)


# ---------------------------------------------------------------- invalid values, by kind

not_a_number = st.one_of(st.text(max_size=8), st.booleans(), st.lists(st.integers(0, 3), max_size=3),
                         st.dictionaries(st.sampled_from("abc"), st.integers(0, 3), min_size=1, max_size=2))
non_finite = st.sampled_from([math.nan, math.inf, -math.inf])
big = 2**62


def bad_value(kind: str):
    if kind == "pos_int":
        return st.one_of(st.integers(-big, 0), st.floats(allow_nan=True), non_finite, not_a_number)
    if kind == "nonneg_int":
        return st.one_of(st.integers(-big, -1), st.floats(allow_nan=True), not_a_number)
    if kind == "pos_float":
        return st.one_of(st.floats(max_value=0.0), st.integers(-big, 0), non_finite, not_a_number)
    if kind == "nonneg_float":
        return st.one_of(st.floats(max_value=-1e-300), st.integers(-big, -1), non_finite, not_a_number)
    raise AssertionError(kind)


def _field_mutation():
    cases = [(key, bad_value("pos_int")) for key in sorted(POS_INT)]
    cases += [(key, bad_value("nonneg_int")) for key in sorted(NONNEG_INT)]
    cases += [(key, bad_value("pos_float")) for key in sorted(POS_FLOAT)]
    cases += [(key, bad_value("nonneg_float")) for key in sorted(NONNEG_FLOAT)]
    for key, allowed in CHOICE.items():
        words = st.text(max_size=12).filter(lambda w, a=allowed: w not in a)
        cases.append((key, st.one_of(words, st.integers(), st.booleans(), st.lists(st.sampled_from(allowed or ["x"]),
                                                                                     max_size=2))))
    for key, words in INT_OR_WORD.items():
        text = st.text(max_size=8).filter(lambda w, a=words: w not in a and w != "inf")
        cases.append((key, st.one_of(st.integers(-big, 0), text, st.booleans(), st.floats(), not_a_number)))
    cases.append((("problem", "task_mean"), st.one_of(non_finite, st.text(max_size=5), st.booleans(),
                                                      st.lists(st.text(max_size=3), min_size=1, max_size=2))))
    cases.append((("problem", "task_cov"), st.one_of(st.floats(max_value=-1e-300), non_finite, st.text(max_size=5),
                                                     st.booleans())))
    return st.sampled_from(cases).flatmap(lambda c: st.tuples(st.just(c[0]), c[1]))


def _with(data: dict, section: str, key: str, value) -> dict:
    out = {name: dict(table) for name, table in data.items()}
    out.setdefault(section, {})[key] = value
    return out


@st.composite
def inconsistent(draw) -> dict:
    """Values fine one by one, wrong together (or for the machine)."""
    d = draw(st.integers(1, 8))
    k = draw(st.integers(1, 8))
    case = draw(st.sampled_from(["k>d", "cov_len", "cov_neg", "cov_matrix_shape", "cov_asym", "cov_indef",
                                 "mean_len", "m_inf", "degenerate", "huge_d", "huge_tasks", "huge_test",
                                 "huge_history", "huge_width", "huge_k"]))
    data = {name: dict(table) for name, table in BASE.items()}
    p, t = data["problem"], data["train"]
    if case == "k>d":
        p.update(d=d, k=d + draw(st.integers(1, 5)))
    elif case == "cov_len":
        p.update(d=max(d, k), k=k, task_cov=[1.0] * draw(st.integers(0, 9).filter(lambda n: n != k)))
    elif case == "cov_neg":
        cov = [1.0] * 2
        cov[draw(st.integers(0, 1))] = -draw(st.floats(1e-9, 1e9))
        p["task_cov"] = cov
    elif case == "cov_matrix_shape":
        rows = draw(st.integers(0, 4))
        p["task_cov"] = [[1.0] * draw(st.integers(0, 4)) for _ in range(rows)]
        assume(not (rows == 2 and all(len(r) == 2 for r in p["task_cov"])))
    elif case == "cov_asym":
        p["task_cov"] = [[1.0, draw(st.floats(0.1, 5))], [0.0, 1.0]]
    elif case == "cov_indef":
        p["task_cov"] = [[1.0, 2.0 + draw(st.floats(0.01, 10))], [2.0 + 0.0, 1.0]]
        p["task_cov"][1][0] = p["task_cov"][0][1]
    elif case == "mean_len":
        p["task_mean"] = [0.5] * draw(st.integers(0, 9).filter(lambda n: n != 2))
    elif case == "m_inf":
        t[draw(st.sampled_from(["m_in", "m_out"]))] = "inf"
        t["tasks"] = draw(st.sampled_from([5, "online"]))
    elif case == "degenerate":  # no head variance and no noise, or m_in = inf with a singular Sigma*
        if draw(st.booleans()):
            p.update(task_cov=draw(st.sampled_from([0.0, [0.0, 0.0], [[0.0, 0.0], [0.0, 0.0]]])), noise_std=0.0)
        else:
            p.update(task_cov=draw(st.sampled_from([0.0, [1.0, 0.0], [[1.0, 1.0], [1.0, 1.0]]])))
            t.update(tasks="inf", m_in="inf")
    elif case == "huge_d":
        p["d"] = draw(st.integers(10**8, 10**15))
        t["tasks"] = draw(st.sampled_from([10**4, "online"]))
        t["batch_tasks"] = 10**4
    elif case == "huge_tasks":
        t.update(tasks=draw(st.integers(10**11, 10**18)))
    elif case == "huge_test":
        data["test"].update(tasks=draw(st.integers(10**12, 10**18)))
    elif case == "huge_history":
        t.update(steps=draw(st.integers(10**11, 10**18)), log_every=1)
    elif case == "huge_width":
        data["model"]["width"] = draw(st.integers(10**10, 10**18))
    elif case == "huge_k":  # a scalar covariance is not expanded to k x k before the memory check
        p.update(d=draw(st.integers(10**6, 10**9)), k=10**6, task_cov=1.0)
    return data


@st.composite
def unknown_keys(draw) -> dict:
    data = {name: dict(table) for name, table in BASE.items()}
    name = draw(st.text(min_size=1, max_size=12))
    where = draw(st.sampled_from(["problem", "model", "train", "test", None]))
    if where is None:
        assume(name not in data)
        data[name] = draw(st.one_of(st.dictionaries(st.text(min_size=1, max_size=4), st.integers(), max_size=2),
                                    st.integers(), st.text(max_size=4)))
    else:
        assume(name not in BASE[where] and name not in validate({}).model_dump()[where])
        data[where][name] = draw(st.one_of(st.integers(), st.text(max_size=4), st.floats(allow_nan=False)))
    return data


@st.composite
def not_a_table(draw) -> dict:
    data = {name: dict(table) for name, table in BASE.items()}
    data[draw(st.sampled_from(sorted(data)))] = draw(st.one_of(st.integers(), st.text(max_size=5),
                                                               st.lists(st.integers(), max_size=2)))
    return data


def _check_refused(tmp: Path, argv: list[str], capsys) -> str:
    out = tmp / "out"
    code = main(["run", *argv, "--out", str(out), "--quiet"])
    captured = capsys.readouterr()
    TRIED["invalid inputs"] += 1
    assert code == 2, (argv, captured.err)
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1, captured.err
    assert captured.err.isascii() or captured.err.isprintable() or captured.err.endswith("\n")
    assert "Traceback" not in captured.err and captured.out == ""
    assert not out.exists()
    return captured.err


def _refuse_data(data: dict, capsys) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.toml"
        path.write_text(tomli_w.dumps(data))
        return _check_refused(Path(tmp), [str(path)], capsys)


@FUZZ
@given(mutation=_field_mutation())
def test_a_wrong_value_in_the_file_is_refused(mutation, capsys):
    (section, key), value = mutation
    err = _refuse_data(_with(BASE, section, key, value), capsys)
    assert f"{section}.{key}" in err or "config" in err


@FUZZ
@given(mutation=_field_mutation())
def test_a_wrong_value_in_set_is_refused(mutation, capsys):
    (section, key), value = mutation
    assume(not isinstance(value, dict))
    literal = tomli_w.dumps({"v": value}).removeprefix("v = ").strip()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.toml"
        path.write_text(tomli_w.dumps(BASE))
        err = _check_refused(Path(tmp), [str(path), "--set", f"{section}.{key}={literal}"], capsys)
    assert f"{section}.{key}" in err


@FUZZ
@given(data=st.one_of(inconsistent(), unknown_keys(), not_a_table()))
def test_inconsistent_unknown_or_oversized_configs_are_refused(data, capsys):
    _refuse_data(data, capsys)


@FUZZ
@given(text=st.text(max_size=200), cut=st.integers(0, 200))
def test_malformed_toml_is_refused(text, cut, capsys):
    good = tomli_w.dumps(BASE)
    broken = good[:cut] + text + "\n= no key\n" + good[cut:]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.toml"
        path.write_text(broken, encoding="utf-8", errors="surrogatepass")
        err = _check_refused(Path(tmp), [str(path)], capsys)
    assert "not valid TOML" in err or "not UTF-8" in err


@FUZZ
@given(junk=st.binary(min_size=1, max_size=64), cut=st.integers(0, 200))
def test_non_utf8_bytes_are_refused(junk, cut, capsys):
    good = tomli_w.dumps(BASE).encode()
    raw = good[:cut] + b"\xff" + junk + good[cut:]  # 0xff never occurs in UTF-8
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.toml"
        path.write_bytes(raw)
        err = _check_refused(Path(tmp), [str(path)], capsys)
    assert "not UTF-8" in err


@FUZZ
@given(item=st.one_of(st.text(max_size=20).filter(lambda s: "=" not in s),
                      st.text(max_size=10).map(lambda s: s.replace(".", "") + "=1"),
                      st.just("=3"), st.just(".=3"), st.just("train.=3"), st.just(".steps=3")))
def test_malformed_set_items_are_refused(item, capsys):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.toml"
        path.write_text(tomli_w.dumps(BASE))
        _check_refused(Path(tmp), [str(path), "--set", item], capsys)


@pytest.mark.parametrize("text", ["v = " + "[" * 5000 + "]" * 5000, "[problem]\nd = 4\n" + "a." * 3000 + "b = 1\n"],
                         ids=["deep-array", "deep-dotted-key"])
def test_pathological_nesting_is_refused(tmp_path, capsys, text):
    path = tmp_path / "c.toml"
    path.write_text(text)
    _check_refused(tmp_path, [str(path)], capsys)
    _check_refused(tmp_path, [str(tmp_path / "ok.toml"), "--set", "train.steps=" + "[" * 5000 + "]" * 5000],
                   capsys)


def _fake_method(tmp_monkeypatch, population: bool):
    from dataclasses import replace

    name = "no-population" if not population else "fo-anil"
    register(replace(get_method("fo-anil"), name=name, population_gradient=None, population_batched=False))
    tmp_monkeypatch.setitem(METHODS, name, get_method(name))
    return name


def test_infinite_tasks_need_a_population_form(tmp_path, capsys, monkeypatch):
    """tasks = "inf" with each registered method that has no exact population form (a stand-in
    method is registered when none of the real ones lacks it)."""
    names = [n for n, m in METHODS.items() if m.population_gradient is None] or [_fake_method(monkeypatch, False)]
    try:
        for name in names:
            err = _refuse_data(_with(_with(BASE, "method", "name", name), "train", "tasks", "inf"), capsys)
            assert "population form" in err or "iterative" in err
    finally:
        unregister("no-population")


# ---------------------------------------------------------------- valid small configs

step_size = st.one_of(st.floats(1e-8, 1e3), st.sampled_from([1e-300, 1e-30, 1e30, 1e150, 1e300, 1.7e308]))


@st.composite
def small_config(draw) -> dict:
    d = draw(st.integers(1, 6))
    k = draw(st.integers(1, d))
    method = draw(st.sampled_from(sorted(METHODS)))
    m = METHODS[method]
    regimes = [draw(st.integers(1, 12)), "online"] + (["inf"] if m.population_gradient and m.fit is None else [])
    tasks = draw(st.sampled_from(regimes))
    m_choices = [1, 2, 5] + (["inf"] if tasks == "inf" else [])
    cov = draw(st.one_of(st.floats(0, 5), st.lists(st.floats(0, 5), min_size=k, max_size=k)))
    test = {"m_test": draw(st.integers(1, 6)), "tasks": draw(st.integers(1, 12)),
            "adapt": draw(st.sampled_from(["default", "gradient", "ridge", "lstsq", "bayes"])),
            "adapt_steps": draw(st.integers(0, 3)), "ridge": draw(st.floats(0, 2))}
    if draw(st.booleans()):
        test["alpha"] = draw(step_size)
    return {
        "problem": {"d": d, "k": k, "noise_std": draw(st.floats(0, 3) | st.just(0.0)), "task_cov": cov,
                    "task_mean": draw(st.one_of(st.floats(-2, 2), st.lists(st.floats(-2, 2), min_size=k,
                                                                           max_size=k))),
                    "seed": draw(st.integers(0, 2**32))},
        "model": {"width": draw(st.integers(1, 6)), "init_scale": draw(st.floats(1e-3, 10)),
                  "init_head_scale": draw(st.floats(0, 3))},
        "method": {"name": method},
        "train": {"tasks": tasks, "batch_tasks": draw(st.integers(1, 8)),
                  "m_in": draw(st.sampled_from(m_choices)), "m_out": draw(st.sampled_from(m_choices)),
                  "alpha": draw(step_size), "beta": draw(step_size), "steps": draw(st.integers(0, 12)),
                  "log_every": draw(st.integers(1, 5)), "inner_steps": draw(st.integers(1, 3)),
                  "seed": draw(st.integers(0, 2**32)), "checkpoint_every": draw(st.integers(0, 3)),
                  "diverge_threshold": draw(st.sampled_from([1e8, 1e300, 1.0]))},
        "test": test,
    }


@settings(max_examples=40, deadline=None)
@given(data=small_config())
def test_valid_small_configs_complete_or_diverge(data):
    try:
        config = validate(data)
    except ConfigError:
        assume(False)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.toml"
        path.write_text(tomli_w.dumps(config.to_dict()))
        result = execute_run(path, [], Path(tmp) / "run", figure=False)
        TRIED["valid configs run"] += 1
        assert result.status in ("completed", "diverged"), result
        files = {p.name for p in (Path(tmp) / "run").iterdir()}
        assert files == {"config.toml", "metrics.csv", "params.npz", "summary.json"}
        with np.load(Path(tmp) / "run" / "params.npz", allow_pickle=False) as params:
            assert params["B"].shape[-2] == config.problem.d
        if result.status == "diverged":
            assert result.summary["diverged_step"] is not None and "diverged" in result.summary["message"]
        else:
            assert np.isfinite(result.summary["test"]["excess_risk"])
        assert tomllib.loads(path.read_text()) == config.to_dict()
