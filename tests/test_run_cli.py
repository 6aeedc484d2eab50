"""End to end: `metarep run` on small configs, its files, and its refusals."""

import json

import numpy as np
import pytest

from metarep.cli import main

SMALL = ["--set", "problem.d=6", "--set", "problem.k=2", "--set", "model.width=6", "--set", "train.tasks=40",
         "--set", "train.steps=60", "--set", "train.log_every=20", "--set", "test.tasks=100", "--quiet"]


@pytest.fixture
def example(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[problem]\nd = 6\nk = 2\ntask_cov = [1.0, 2.0]\n[method]\nname = "fo-anil"\n')
    return path


@pytest.mark.parametrize("regime", [["--set", "train.tasks=40"], ["--set", 'train.tasks="inf"'],
                                    ["--set", 'train.tasks="inf"', "--set", 'train.m_in="inf"'],
                                    ["--set", 'train.tasks="online"', "--set", "train.batch_tasks=20"]])
def test_run_writes_every_output(example, tmp_path, regime):
    out = tmp_path / "run"
    assert main(["run", str(example), *SMALL, *regime, "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {"config.toml", "metrics.csv", "params.npz", "summary.json",
                                               "metrics.png"}
    s = json.loads((out / "summary.json").read_text())
    assert s["status"] == "completed" and s["steps"] == 60
    assert set(s["final"]) >= {"align_norm", "perp_norm", "mean_norm", "lambda_rel_err", "singular_values"}
    assert len(s["final"]["singular_values"]) == 6 and len(s["theory"]["lambda_star"]) == 2
    assert set(s["test"]) >= {"excess_risk", "excess_risk_se", "excess_risk_expected"}
    assert np.isfinite(s["test"]["excess_risk_expected"])
    with np.load(out / "params.npz") as p:
        assert p["B"].shape == (6, 6) and p["w"].shape == (6,) and p["B_star"].shape == (6, 2)
    rows = (out / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("step,loss,align_norm,sigma_min,perp_norm,mean_norm,lambda_rel_err,sv_0")
    assert len(rows) == 1 + 4


def test_same_seeds_give_identical_results(example, tmp_path):
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        assert main(["run", str(example), *SMALL, "--out", str(out)]) == 0
    for name in ("metrics.csv", "params.npz"):
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes()


def test_divergence_is_recorded_with_advice(example, tmp_path, capsys):
    out = tmp_path / "d"
    assert main(["run", str(example), *SMALL, "--set", "train.beta=200", "--out", str(out)]) == 3
    s = json.loads((out / "summary.json").read_text())
    assert s["status"] == "diverged" and s["diverged_step"] >= 1
    assert "lower train.beta" in s["message"] and "lower train.beta" in capsys.readouterr().err


@pytest.mark.parametrize("override, message", [
    ("problem.k=9", "problem.k must be <= problem.d"),
    ("problem.d=0", "problem.d"),
    ("train.alpha=0", "train.alpha"),
    ("train.beta=-1", "train.beta"),
    ("train.tasks=0", "train.tasks"),
    ("train.m_in=-2", "train.m_in"),
    ("test.m_test=0", "test.m_test"),
    ("train.methd='x'", "train.methd: unknown key"),
    ("method.name='reptile'", "method.name must be one of"),
    ("problem.task_cov=[1.0, 2.0, 3.0]", "problem.task_cov"),
    ("problem.task_cov=[1.0, -2.0]", "problem.task_cov"),
    ("train.m_in='inf'", 'may be "inf" only with train.tasks = "inf"'),
])
def test_bad_configs_exit_2_with_one_line(example, tmp_path, capsys, override, message):
    out = tmp_path / "never"
    assert main(["run", str(example), "--set", override, "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()
