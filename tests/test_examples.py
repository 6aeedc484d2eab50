"""The example configs a new user starts from run as written (fewer steps)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from metarep.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name, data", [("table", "schools.csv: d = 7, 30 training / 10 held-out tasks of 40"),
                                        ("dataset", "exam: d = 11, 50 training / 13 held-out tasks of 65")])
def test_example_config_runs(name, data, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)  # data.path is relative to the directory the user runs from
    out = tmp_path / name
    assert main(["run", f"examples/{name}.toml", "--out", str(out), "--set", "train.steps=20", "--quiet"]) == 0
    assert data in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["test"]["mse"] > 0


def test_sinusoid_example_reports_the_benchmark_and_the_span(tmp_path, monkeypatch, capsys):
    """MAML with Adam on the benchmark (here 4 layers): the MSE after adaptation for each K and the
    share of feature energy outside span{1, sin, cos}."""
    pytest.importorskip("torch")
    monkeypatch.chdir(ROOT)
    out = tmp_path / "sinusoid"
    assert main(["run", "examples/sinusoid.toml", "--out", str(out), "--set", "train.steps=10",
                 "--set", "model.layers=4", "--set", "problem.test_tasks=50", "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    family = summary["test"]["family"]
    assert summary["status"] == "completed" and summary["method"] == "maml"
    assert set(family["mse"]) == {"5", "10", "20"} and all(family["mse"][k]["1"] > 0 for k in family["mse"])
    assert "span_outside" in (out / "metrics.csv").read_text().splitlines()[0]
