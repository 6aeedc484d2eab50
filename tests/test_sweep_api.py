"""`metarep.sweeps.run_grid`: the sweep from Python. A dict config and a grid of lists give the
results table as a DataFrame (the rows of results.csv), continue like the CLI, and refuse bad
input before writing anything."""

from __future__ import annotations

import shlex

import pandas as pd
import pytest

from metarep.cli import main
from metarep.config.schema import ConfigError
from metarep.storage.results import read_csv
from metarep.sweeps import SweepError, command_line, plan, read_spec, run_grid, run_sweep

CONFIG = {
    "problem": {"d": 5, "k": 2},
    "model": {"width": 5},
    "method": {"name": "fo-anil"},
    "train": {"tasks": 20, "steps": 20, "log_every": 10},
    "test": {"tasks": 30},
}
GRID = {"train.m_in": [5, 10], "train.beta": [0.05]}


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    out = tmp_path_factory.mktemp("api") / "sweep"
    return out, run_grid(CONFIG, GRID, workers=1, out=out, figures=False)


def test_the_dataframe_is_results_csv(swept):
    out, df = swept
    columns, rows = read_csv(out / "results.csv")
    assert list(df.columns) == columns
    assert columns[:4] == ["run_id", "train.m_in", "train.beta", "seed"]
    assert len(df) == 2 and list(df["train.m_in"]) == [5, 10] and set(df["status"]) == {"completed"}
    assert df.to_dict("records") == rows  # every value, to the last bit
    # pandas reads results.csv back to the same numbers
    again = pd.read_csv(out / "results.csv")
    for column in ("excess_risk", "perp_norm", "align_norm", "steps", "train.m_in"):
        assert list(again[column]) == list(df[column])


def test_running_it_again_skips_what_is_done(swept):
    out, df = swept
    stamps = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/summary.json")}
    assert len(stamps) == 2
    again = run_grid(CONFIG, GRID, workers=1, out=out, figures=False)
    pd.testing.assert_frame_equal(again, df)  # wall times too: nothing ran again
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/summary.json")} == stamps


def test_its_command_line_continues_the_same_sweep(swept):
    out, df = swept
    spec = (out / "sweep.toml").read_text()
    words = shlex.split(command_line(read_spec(out), out))
    assert words[2] == str(out / "base.toml")
    assert main([*words[1:], "--quiet", "--no-figures"]) == 0
    assert (out / "sweep.toml").read_text() == spec
    assert run_grid(CONFIG, GRID, workers=1, out=out, figures=False)["wall_s"].tolist() == df["wall_s"].tolist()


@pytest.mark.parametrize("grid, seeds, error, match", [
    ({"train.m_in": [5, 0]}, None, SweepError, "train.m_in"),
    ({"train.m_in": [5, 5.0]}, None, SweepError, "twice"),
    ({"m_in": [5]}, None, SweepError, "section.key"),
    ({"optim.lr": [1]}, None, SweepError, "not a config section"),
    ({"train.m_in": []}, None, SweepError, "no values"),
    ({"train.seed": [1, 2]}, "0-1", SweepError, "--seeds"),
    ({"train.m_in": [5]}, [1, 1], SweepError, "repeat"),
    ({"train.m_in": [5]}, [-1], SweepError, "non-negative"),
    ({"method.name": ["no-such-method"]}, None, ConfigError, "no-such-method"),
])
def test_bad_input_raises_before_writing(tmp_path, grid, seeds, error, match):
    out = tmp_path / "sweep"
    with pytest.raises(error, match=match):
        run_grid(CONFIG, grid, seeds=seeds, out=out)
    assert not out.exists()


def test_a_config_file_and_seeds(tmp_path):
    import tomli_w

    path = tmp_path / "tiny.toml"
    path.write_text(tomli_w.dumps(CONFIG))
    df = run_grid(path, {}, seeds=[3], out=tmp_path / "sweep", workers=1, figures=False)
    assert list(df["seed"]) == [3] and not (tmp_path / "sweep" / "base.toml").exists()
    assert "train.m_in" not in df.columns and df["status"].tolist() == ["completed"]


def test_one_worker_runs_here_and_stops_between_runs(tmp_path):
    out = tmp_path / "sweep"
    grid = {"train.m_in": [5, 10, 20]}
    done = lambda: len(list((out / "runs").glob("*/summary.json"))) >= 1  # noqa: E731 - stop after one run
    outcome = run_sweep(plan(CONFIG, grid), out, workers=1, figures=False, progress=False, should_stop=done)
    assert outcome.stopped and len(outcome.rows) == 1 and outcome.missing == 2
    df = run_grid(CONFIG, grid, workers=1, out=out, figures=False)
    assert list(df["train.m_in"]) == [5, 10, 20] and set(df["status"]) == {"completed"}
    assert df["wall_s"].iloc[0] == outcome.rows[0]["wall_s"]  # the first run was not redone
