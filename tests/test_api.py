"""The Python API gives what the command line gives: the same summary, the same files."""

from __future__ import annotations

import json
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import metarep
from metarep.cli import main

SMALL = {"problem": {"d": 6, "k": 2, "task_cov": [1.0, 2.0], "seed": 3},
         "model": {"width": 6},
         "method": {"name": "fo-anil"},
         "train": {"tasks": 50, "m_in": 5, "m_out": 5, "steps": 40, "log_every": 10, "beta": 0.1},
         "test": {"tasks": 100, "m_test": 5}}
FILES = ("config.toml", "metrics.csv", "params.npz", "summary.json")


def _cli_run(tmp_path: Path, data: dict) -> Path:
    import tomli_w

    path = tmp_path / "c.toml"
    path.write_text(tomli_w.dumps(data))
    out = tmp_path / "cli"
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 0
    return out


def test_run_matches_the_cli_summary_and_save_writes_the_same_bytes(tmp_path):
    result = metarep.run(SMALL)
    cli = _cli_run(tmp_path, SMALL)
    assert result.summary == json.loads((cli / "summary.json").read_text())
    saved = result.save(tmp_path / "api")
    for name in FILES:
        assert (saved / name).read_bytes() == (cli / name).read_bytes(), name
    assert (saved / "metrics.png").stat().st_size > 0
    frame = pd.read_csv(cli / "metrics.csv")
    pd.testing.assert_frame_equal(result.metrics, frame)
    assert set(result.params) == {"B", "w"} and result.problem.B_star.shape == (6, 2)


def test_load_reads_a_run_directory_back(tmp_path):
    cli = _cli_run(tmp_path, SMALL)
    loaded = metarep.load(cli)
    fresh = metarep.run(SMALL)
    assert loaded.summary == fresh.summary and loaded.run_dir == cli
    np.testing.assert_array_equal(loaded.params["B"], fresh.params["B"])
    pd.testing.assert_frame_equal(loaded.metrics, fresh.metrics)
    assert loaded.config == fresh.config
    with pytest.raises(metarep.ConfigError, match="not a finished run"):
        metarep.load(tmp_path)


def test_run_with_out_writes_the_cli_directory(tmp_path):
    result = metarep.run(SMALL, out=tmp_path / "api")
    cli = _cli_run(tmp_path, SMALL)
    for name in FILES:
        assert (tmp_path / "api" / name).read_bytes() == (cli / name).read_bytes(), name
    assert result.run_dir == tmp_path / "api"
    with pytest.raises(metarep.ConfigError, match="not empty"):
        metarep.run(SMALL, out=tmp_path / "api")


def test_config_from_a_path_a_dict_or_a_config_gives_one_result(tmp_path):
    import tomli_w

    path = tmp_path / "c.toml"
    path.write_text(tomli_w.dumps(SMALL))
    config = metarep.Config.model_validate(SMALL)
    a, b, c = metarep.run(SMALL), metarep.run(path), metarep.run(config)
    assert a.summary == b.summary == c.summary
    with pytest.raises(TypeError):
        metarep.run(42)


def test_a_run_that_cannot_fit_is_refused_at_once_without_allocating():
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(metarep.ConfigError, match="lower train.tasks"):
        metarep.run({"train": {"tasks": 100_000_000}})
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert elapsed < 1.0 and peak < 50 * 2**20


def test_bad_input_raises_config_error_with_the_cli_line(tmp_path, capsys):
    bad = {**SMALL, "train": {**SMALL["train"], "beta": -1}}
    with pytest.raises(metarep.ConfigError) as err:
        metarep.run(bad)
    import tomli_w

    path = tmp_path / "bad.toml"
    path.write_text(tomli_w.dumps(bad))
    assert main(["run", str(path), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {err.value}"


def test_figure_and_methods_table():
    result = metarep.run(SMALL)
    fig = result.figure()
    assert fig.axes and all(ax.get_ylabel() for ax in fig.axes if ax.has_data())
    table = metarep.methods("linear")
    assert {"name", "iterative", "infinite_tasks", "online_tasks", "per_task_state", "default_adapt"} <= set(table)
    assert table.set_index("name").loc["fo-anil", "infinite_tasks"]
    assert not table.set_index("name").loc["burer-monteiro", "online_tasks"]


def test_a_diverging_run_is_a_result_with_its_step_and_the_cli_exits_3(tmp_path):
    data = {**SMALL, "train": {**SMALL["train"], "beta": 1e4}}
    result = metarep.run(data)
    assert result.status == "diverged" and "diverged at step" in result.summary["message"]
    import tomli_w

    path = tmp_path / "c.toml"
    path.write_text(tomli_w.dumps(data))
    assert main(["run", str(path), "--out", str(tmp_path / "o"), "--quiet"]) == 3
