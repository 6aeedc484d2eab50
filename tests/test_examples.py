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
