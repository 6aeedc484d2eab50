"""Task families: the registry, the [problem] table it validates, the default family's draws, and a
toy family registered here and run through metarep.run and the CLI."""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from pydantic import BaseModel, ConfigDict

import metarep
from metarep import families, seeds
from metarep.cli import main
from metarep.config.schema import ConfigError, validate
from metarep.families.base import _FAMILIES
from metarep.families.problem import make_problem, sample_tasks
from metarep.families.tasks import Tasks

OUTER = ("config", "engine", "execute", "store", "cli", "sweep", "sweeps", "report", "reproduce", "api", "results",
         "plots", "resources", "models")


class LineOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    slope_std: float = 1.0


@dataclass(frozen=True)
class Line:
    """y = s x + noise, s ~ N(0, slope_std^2), x ~ N(0, 1): one true feature, x itself."""

    slope_std: float
    noise_std: float
    family: ClassVar[str] = "toy-line"
    d: ClassVar[int] = 1
    k: ClassVar[int] = 1

    def teacher_features(self, X):
        return X


def _line_tasks(truth: Line, n, m_in, m_out, rng):
    s = truth.slope_std * rng.standard_normal((n, 1))
    X_in, X_out = rng.standard_normal((n, m_in, 1)), rng.standard_normal((n, m_out, 1))
    noise = truth.noise_std
    return Tasks(X_in, X_in[..., 0] * s + noise * rng.standard_normal((n, m_in)), X_out,
                 X_out[..., 0] * s + noise * rng.standard_normal((n, m_out)), s)


TOY = families.Family(
    name="toy-line", summary="y = s x + noise", Options=LineOptions,
    make=lambda p, rng: Line(p.options.slope_std, p.noise_std),
    sample_tasks=_line_tasks, sample_inputs=lambda truth, n, rng: rng.standard_normal((n, 1)),
    probe=lambda truth, n, rng: np.linspace(-3, 3, 200)[:, None], arrays=lambda truth: {},
    span=lambda truth, X: np.hstack([np.ones_like(X), X]), fixed={"d": 1, "k": 1},
    foreign=("task_mean", "task_cov", "teacher"), archs=("mlp",), oracle_network=False, tracks_span=True)


@pytest.fixture
def toy():
    families.register_family(TOY)
    yield TOY
    _FAMILIES.pop(TOY.name)


TOY_CONFIG = {"problem": {"family": "toy-line", "slope_std": 2.0, "noise_std": 0.1},
              "model": {"arch": "mlp", "width": 4, "bias": True, "init_head_scale": 1.0},
              "method": {"name": "fo-anil"},
              "train": {"tasks": "online", "batch_tasks": 10, "m_in": 5, "m_out": 5, "steps": 20, "log_every": 10,
                        "alpha": 0.05, "beta": 0.05},
              "test": {"tasks": 50, "m_test": 8}}


def test_a_toy_family_runs_through_metarep_run(toy, tmp_path):
    result = metarep.run(TOY_CONFIG, out=tmp_path / "run")
    assert result.summary["status"] == "completed"
    assert result.config.problem.options.slope_std == 2.0 and result.config.problem.d == 1
    row = result.history[-1]
    assert 0 <= row["span_outside"] <= 1 and "align_norm" not in row
    assert np.isfinite(result.summary["test"]["excess_risk"])
    assert "family" not in result.summary["test"]  # the toy declares no test measures


def test_a_toy_family_runs_through_the_cli(toy, tmp_path):
    import tomli_w

    path = tmp_path / "toy.toml"
    path.write_bytes(tomli_w.dumps(TOY_CONFIG).encode())
    assert main(["run", str(path), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert s["status"] == "completed" and "span_outside" in s["final"]
    written = (tmp_path / "run" / "config.toml").read_text()
    assert 'family = "toy-line"' in written and "slope_std = 2.0" in written and "task_cov" not in written


def test_its_keys_are_validated_with_one_line_errors(toy):
    def refused(problem, model="mlp"):
        with pytest.raises(ConfigError) as err:
            validate({**TOY_CONFIG, "problem": {"family": "toy-line", **problem}, "model": {"arch": model}})
        return str(err.value)

    assert "not a key of family 'toy-line' (it takes slope_std)" in refused({"slope": 1.0})
    assert "problem.d must be 1 for family 'toy-line'" in refused({"d": 3})
    assert "problem.task_cov is not a key of family 'toy-line'" in refused({"task_cov": 2.0})
    assert "runs on model.arch = 'mlp', not 'linear'" in refused({}, model="linear")
    with pytest.raises(ConfigError, match="problem.family must be one of gaussian, sinusoid, toy-line"):
        validate({"problem": {"family": "nope"}})


def test_the_default_family_is_the_gaussian_model_with_its_draws():
    written = validate({"problem": {"family": "gaussian", "d": 5, "k": 2, "noise_std": 0.5}})
    default = validate({"problem": {"d": 5, "k": 2, "noise_std": 0.5}})
    assert written == default and "family" not in default.to_dict()["problem"]
    assert "family" not in default.model_dump()["problem"]   # the config hash of an old config is unchanged
    from metarep.engine.sources import synthetic_source

    truth = synthetic_source(default).truth
    expected = make_problem(5, 2, noise_std=0.5, rng=seeds.rng(0, "problem"))
    assert np.array_equal(truth.B_star, expected.B_star)
    a = families.sample_tasks(truth, 4, 3, 2, np.random.default_rng(7))
    b = sample_tasks(expected, 4, 3, 2, np.random.default_rng(7))
    assert all(np.array_equal(x, y) for x, y in zip(a.pooled(), b.pooled()))
    assert np.array_equal(families.sample_inputs(truth, 6, np.random.default_rng(1)),
                          np.random.default_rng(1).standard_normal((6, 5)))


def test_families_are_numerical_core():
    src = Path(families.__file__).parent
    for path in src.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                parts = name.split(".")
                assert not (parts[0] == "metarep" and len(parts) > 1 and parts[1] in OUTER), f"{path.name}: {name}"
