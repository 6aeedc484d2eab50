"""The network through the one engine: the CLI's run, checkpoints and bit-identical resume,
what the config refuses, and the metrics and summary it writes."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from metarep.config.schema import ConfigError, validate  # noqa: E402
from metarep.engine import run  # noqa: E402
from metarep.running.execute import execute_run  # noqa: E402
from run_helpers import result_files, stop_after

CONFIG = """[problem]
d = 5
k = 2
teacher = "relu"
[model]
arch = "mlp"
width = 4
layers = {layers}
bias = {bias}
[method]
name = "{method}"
[train]
tasks = {tasks}
batch_tasks = 6
m_in = 4
m_out = 4
alpha = 0.2
beta = 0.1
steps = 25
log_every = 3
checkpoint_every = {every}
seed = 2
[test]
m_test = 6
tasks = 30
"""


def _config(tmp: Path, *, method="fo-anil", tasks="12", every=0, layers=2, bias="false") -> Path:
    path = tmp / f"{method}-{tasks.strip(chr(34))}-{every}.toml"
    path.write_text(CONFIG.format(method=method, tasks=tasks, every=every, layers=layers, bias=bias))
    return path




@pytest.mark.parametrize("method,tasks,layers,bias", [("fo-anil", '"online"', 3, "true"),
                                                      ("burer-monteiro", "12", 2, "false"),
                                                      ("fo-anil", '"online"', 4, "true"),
                                                      ("fo-maml", '"online"', 4, "true")])
def test_interrupted_mlp_run_resumes_bit_identical(tmp_path, method, tasks, layers, bias):
    config = _config(tmp_path, method=method, tasks=tasks, every=4, layers=layers, bias=bias)
    assert execute_run(config, [], tmp_path / "ref", figure=False).status == "completed"
    out = tmp_path / "run"
    rng = random.Random(7)
    result = execute_run(config, [], out, figure=False, should_stop=stop_after(rng.randint(2, 10)))
    assert result.status == "interrupted" and not (out / "summary.json").exists()
    result = execute_run(None, [], None, resume=out, figure=False, should_stop=stop_after(rng.randint(2, 8)))
    assert result.status == "interrupted"
    result = execute_run(None, [], None, resume=out, figure=False)
    assert result.status == "completed"
    assert result_files(out) == result_files(tmp_path / "ref")


def _cfg(**over):
    base = {"problem": {"d": 5, "k": 2, "teacher": "relu"}, "model": {"arch": "mlp", "width": 4},
            "method": {"name": "anil"}, "train": {"tasks": 10, "m_in": 4, "m_out": 4, "steps": 6, "log_every": 2,
                                                "alpha": 0.2, "beta": 0.1},
            "test": {"m_test": 6, "tasks": 20}}
    for key, value in over.items():
        section, name = key.split("__")
        base[section][name] = value
    return validate(base)


def test_population_tasks_refused_by_declaration():
    with pytest.raises(ConfigError, match="exact population form.*mlp"):
        _cfg(train__tasks="inf")


@pytest.mark.parametrize("bad,match", [({"model__layers": 1}, "model.layers"),
                                       ({"model__hidden": 3}, "layers = 3"),
                                       ({"model__activation": "tanh"}, "model.activation"),
                                       ({"train__chunk_tasks": 5}, "chunk_tasks"),
                                       ({"method__name": "moments"}, "method.name")])
def test_config_refuses(bad, match):
    with pytest.raises(ConfigError, match=match):
        _cfg(**bad)


def test_summary_and_metrics_of_a_run():
    _, state, summary = run(_cfg(model__layers=3, model__hidden=6, train__steps=4))
    assert summary["status"] == "completed" and summary["arch"] == "mlp"
    row = state.history[-1]
    for key in ("align_norm", "sigma_min", "perp_norm", "effective_rank", "r2", "sv_4", "phi_ev_3"):
        assert np.isfinite(row[key]), key
    assert "sv_5" not in row and "phi_ev_4" not in row    # W1 is 6 x 5: 5 singular values; width 4
    assert state.params.W1.shape == (6, 5) and state.params.W2.shape == (4, 6)
    assert summary["test"]["excess_risk"] > 0 and summary["test"]["excess_risk_se"] > 0
    assert "theory" not in summary


def test_float32_run_close_to_float64():
    _, s64, sum64 = run(_cfg())
    _, s32, sum32 = run(_cfg(model__dtype="float32"))
    assert s32.params.W1.dtype == np.float32
    np.testing.assert_allclose(s32.params.W1, s64.params.W1, rtol=0, atol=1e-5)
    assert abs(sum32["test"]["excess_risk"] / sum64["test"]["excess_risk"] - 1) < 1e-4


def test_methods_meet_the_same_test_tasks_and_oracle_wins():
    risks = {name: run(_cfg(method__name=name))[2]["test"]["excess_risk"] for name in ("oracle", "none", "fo-anil")}
    assert risks["oracle"] < risks["fo-anil"] and risks["oracle"] < risks["none"]
