"""Sweeps: grid parsing and expansion, validation before anything is written, local and Ray
backends giving the same numbers, divergence and failure rows, and continuing a sweep."""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from metarep.cli import main
from metarep.config.files import load
from metarep.engine import build, run
from metarep.running.execute import execute_run
from metarep.storage import store
from metarep.storage.results import Results, comparable, read_csv
from metarep.sweeps import (
    SEED_RULE,
    TEST_SEED_OFFSET,
    Axis,
    SweepError,
    format_seeds,
    parse_axis,
    parse_grid,
    parse_seeds,
    plan,
    split_values,
)

TINY = """
[problem]
d = 5
k = 2
seed = 0

[model]
width = 5

[method]
name = "fo-anil"

[train]
tasks = 20
m_in = 10
m_out = 10
alpha = 0.1
beta = 0.05
steps = 30
log_every = 10

[test]
tasks = 50
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("config") / "tiny.toml"
    path.write_text(TINY)
    return path


def sweep_args(config: Path, out: Path, *extra: str) -> list[str]:
    return ["sweep", str(config), "--grid", "train.m_in=5,10", "--seeds", "0-1", "--out", str(out), "--quiet",
            *extra]


def table_rows(out: Path) -> list[dict]:
    with Results(out / "results.sqlite") as table:
        return table.rows()


# ----------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("text, seeds", [("0-4", [0, 1, 2, 3, 4]), ("1,3", [1, 3]), ("7", [7]),
                                         ("0-2,7", [0, 1, 2, 7]), (" 2 - 3 ", [2, 3])])
def test_parse_seeds(text, seeds):
    assert parse_seeds(text) == seeds
    assert parse_seeds(format_seeds(seeds)) == seeds


@pytest.mark.parametrize("text", ["4-0", "a", "1,1", "0-2,2", "-1", "", "1.5"])
def test_parse_seeds_rejects(text):
    with pytest.raises(SweepError):
        parse_seeds(text)


def test_parse_axis_reads_toml_values():
    assert parse_axis("train.m_in=5,10,inf") == Axis("train.m_in", (5, 10, "inf"))
    assert parse_axis("method.name=fo-anil").values == ("fo-anil",)
    assert parse_axis('method.name="fo-anil"').values == ("fo-anil",)
    assert parse_axis("problem.task_cov=[1.0, 2.0],3.0").values == ([1.0, 2.0], 3.0)
    assert parse_axis("train.alpha=0.1,1e-2").values == (0.1, 0.01)
    assert split_values('[1,2],"a,b",{x = 1}') == ["[1,2]", '"a,b"', "{x = 1}"]


@pytest.mark.parametrize("text", ["m_in=5", "foo.bar=1", "train.m_in=", "train.m_in=5,,6", "train.m_in=5,5",
                                  "train.m_in=5,5.0", "train.m_in"])
def test_parse_axis_rejects(text):
    with pytest.raises(SweepError):
        parse_axis(text)


def test_the_command_line_reads_back_as_the_same_sweep(tiny):
    grid = ["train.m_in=5,inf", "problem.task_cov=[1.0, 2.0],3.0", 'method.name="fo-anil"', "train.alpha=1e-3,0.1"]
    sweep = plan(tiny, grid, "0-2,5", ["train.tasks=inf", "train.m_out=inf"])
    words = shlex.split(sweep.command("out"))
    assert words[:3] == ["metarep", "sweep", str(tiny)]
    again = [words[i + 1] for i, w in enumerate(words) if w == "--grid"]
    assert parse_grid(again) == sweep.grid
    assert words[words.index("--seeds") + 1] == "0-2,5"
    assert words[words.index("--set") + 1] == "train.tasks=inf"
    assert "train.m_in=5,inf" in again


def test_parse_grid_rejects_a_key_twice():
    with pytest.raises(SweepError, match="twice"):
        parse_grid(["train.m_in=5", "train.m_in=10"])


def test_plan_is_the_cartesian_product_in_order(tiny):
    sweep = plan(tiny, ["train.m_in=5,10", "train.beta=0.01,0.02,0.03"], "0-1")
    assert len(sweep.runs) == 2 * 3 * 2
    expected = [(m, b, s) for m in (5, 10) for b in (0.01, 0.02, 0.03) for s in (0, 1)]
    got = [(r.point["train.m_in"], r.point["train.beta"], r.seed) for r in sweep.runs]
    assert got == expected
    assert [r.index for r in sweep.runs] == list(range(12))
    for run_, (m, b, s) in zip(sweep.runs, expected):
        cfg = run_.config
        assert (cfg.train.m_in, cfg.train.beta, cfg.train.seed) == (m, b, s)
        assert cfg.test.seed == s + TEST_SEED_OFFSET
        assert cfg.problem.seed == 0  # kept from the config
        assert cfg.train.steps == 30
    ids = [r.run_id for r in sweep.runs]
    assert len(set(ids)) == len(ids)
    assert ids[0].startswith("m_in=5,beta=0.01,seed=0-")
    assert [r.run_id for r in plan(tiny, ["train.m_in=5,10", "train.beta=0.01,0.02,0.03"], "0-1").runs] == ids
    assert sweep.spec()["sweep"]["seed_rule"] == SEED_RULE


def test_plan_without_seeds_keeps_the_config_seeds(tiny):
    sweep = plan(tiny, ["train.m_in=5,10"], None, ["train.seed=3"])
    assert [r.config.train.seed for r in sweep.runs] == [3, 3]
    assert [r.config.test.seed for r in sweep.runs] == [1, 1]
    inf = plan(tiny, ["train.m_in=5,inf"], None, ["train.tasks=inf", "train.m_out=inf"])
    assert [r.config.train.m_in for r in inf.runs] == [5, "inf"]
    assert inf.runs[0].config.train.m_out == "inf"


@pytest.mark.parametrize("grid, seeds, sets, match", [
    (["train.seed=1,2"], "0-1", [], "--seeds"),
    (["train.m_in=5"], "0-1", ["test.seed=4"], "--seeds"),
    (["train.m_in=5,10"], None, ["train.m_in=5"], "both"),
    (["train.m_in=5,0"], None, [], "train.m_in"),
    (["train.nope=1"], None, [], "train.nope"),
    (["train.m_in=5,inf"], None, [], "inf"),
])
def test_plan_rejects(tiny, grid, seeds, sets, match):
    with pytest.raises(SweepError, match=match):
        plan(tiny, grid, seeds, sets)


# ----------------------------------------------------------------------------- nothing written on bad input


@pytest.mark.parametrize("extra", [["--grid", "train.m_in=5,0"], ["--grid", "train.nope=1,2"],
                                   ["--grid", "method.name=fo-anil,no-such-method"], ["--seeds", "3-1"],
                                   ["--grid", "train.m_in=5", "--set", "model.width=0"]])
def test_invalid_sweep_exits_2_and_writes_nothing(tiny, tmp_path, capsys, extra):
    out = tmp_path / "sweep"
    assert main(["sweep", str(tiny), "--out", str(out), "--quiet", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert not out.exists()


def test_missing_config_exits_2(tmp_path, capsys):
    assert main(["sweep", str(tmp_path / "none.toml"), "--out", str(tmp_path / "o")]) == 2
    assert "cannot read config" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_ray_backend_without_ray_says_how_to_install(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    out = tmp_path / "sweep"
    assert main(sweep_args(tiny, out, "--backend", "ray")) == 2
    assert "metarep[ray]" in capsys.readouterr().err
    assert not out.exists()


def test_non_sweep_output_directory_is_refused(tiny, tmp_path, capsys):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(sweep_args(tiny, out)) == 2
    assert "not empty" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


# ----------------------------------------------------------------------------- running


@pytest.fixture(scope="module")
def local_sweep(tiny, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local") / "sweep"
    assert main(sweep_args(tiny, out, "--workers", "2", "--no-figures")) == 0
    return out


def test_local_sweep_records_one_row_per_run(tiny, local_sweep):
    rows = table_rows(local_sweep)
    assert len(rows) == 4
    assert [(r["train.m_in"], r["seed"]) for r in rows] == [(5, 0), (5, 1), (10, 0), (10, 1)]
    assert all(r["status"] == "completed" and r["steps"] == 30 and r["message"] == "" for r in rows)
    for r in rows:
        run_dir = local_sweep / "runs" / r["run_id"]
        assert (run_dir / "summary.json").exists() and not (run_dir / "metrics.png").exists()
        assert load(run_dir / "config.toml").train.m_in == r["train.m_in"]
        assert r["wall_s"] > 0
    # the numbers are those of the run itself, computed here in memory
    config = load(tiny, ["train.m_in=10", "train.seed=1", f"test.seed={1 + TEST_SEED_OFFSET}"])
    _, _, summary = run(config)
    row = rows[3]
    assert row["excess_risk"] == summary["test"]["excess_risk"]
    assert row["excess_risk_se"] == summary["test"]["excess_risk_se"]
    for key in ("perp_norm", "align_norm", "mean_norm", "lambda_rel_err", "rank"):
        assert row[key] == summary["final"][key]
    assert len({r["excess_risk"] for r in rows}) == 4
    # results.csv holds the same table, to the last bit
    columns, csv_rows = read_csv(local_sweep / "results.csv")
    assert columns[:3] == ["run_id", "train.m_in", "seed"]
    assert csv_rows == rows


def test_workers_do_not_change_the_numbers(tiny, local_sweep, tmp_path):
    out = tmp_path / "one"
    assert main(sweep_args(tiny, out, "--workers", "1")) == 0
    assert comparable(table_rows(out)) == comparable(table_rows(local_sweep))
    assert len(list((out / "runs").glob("*/metrics.png"))) == 4  # figures change no number


def test_ray_sweep_equals_local(tiny, local_sweep, tmp_path, monkeypatch):
    pytest.importorskip("ray")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    out = tmp_path / "ray"
    assert main(sweep_args(tiny, out, "--backend", "ray", "--workers", "2", "--no-figures")) == 0
    assert comparable(table_rows(out)) == comparable(table_rows(local_sweep))


def test_rerun_skips_done_runs_and_refuses_another_spec(tiny, local_sweep, capsys):
    before = table_rows(local_sweep)
    stamps = {p: p.stat().st_mtime_ns for p in (local_sweep / "runs").glob("*/summary.json")}
    assert main(sweep_args(tiny, local_sweep, "--workers", "2", "--no-figures")) == 0
    assert table_rows(local_sweep) == before  # wall times too: nothing ran again
    assert {p: p.stat().st_mtime_ns for p in (local_sweep / "runs").glob("*/summary.json")} == stamps
    capsys.readouterr()
    spec = (local_sweep / "sweep.toml").read_text()
    other_seeds = ["sweep", str(tiny), "--grid", "train.m_in=5,10", "--seeds", "0-2", "--out", str(local_sweep)]
    for other in (other_seeds, sweep_args(tiny, local_sweep, "--set", "train.steps=31")):
        assert main(other) == 2
        assert "different sweep" in capsys.readouterr().err
    assert (local_sweep / "sweep.toml").read_text() == spec
    assert len(list((local_sweep / "runs").iterdir())) == 4
    assert table_rows(local_sweep) == before


def test_a_second_sweep_on_the_same_directory_is_refused(tiny, local_sweep, capsys):
    fcntl = pytest.importorskip("fcntl")
    before = table_rows(local_sweep)
    with open(local_sweep / ".sweep.lock", "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)  # as a running sweep holds it
        assert main(sweep_args(tiny, local_sweep)) == 2
    assert "another" in capsys.readouterr().err
    assert table_rows(local_sweep) == before


def test_divergence_is_a_row_and_a_failure_does_not_stop_the_sweep(tiny, tmp_path, capsys):
    out = tmp_path / "sweep"
    args = ["sweep", str(tiny), "--grid", "train.beta=0.05,1000", "--workers", "1", "--no-figures", "--quiet",
            "--out", str(out)]
    assert main(args) == 0
    good, bad = table_rows(out)
    assert good["status"] == "completed" and good["steps"] == 30
    assert bad["status"] == "diverged" and bad["steps"] < 30 and "diverged" in bad["message"]
    assert bad["excess_risk"] is None
    # a run that raises: its checkpoint is garbage
    run_dir = out / "runs" / good["run_id"]
    (run_dir / "summary.json").unlink()
    (run_dir / store.CHECKPOINT).write_bytes(b"not a checkpoint")
    capsys.readouterr()
    assert main(args) == 1
    failed, bad_again = table_rows(out)
    assert failed["status"] == "failed" and failed["run_id"] == good["run_id"]
    assert failed["message"] and "\n" not in failed["message"] and failed["excess_risk"] is None
    assert bad_again == bad  # done runs are not redone
    assert "failed" in capsys.readouterr().err
    assert len(read_csv(out / "results.csv")[1]) == 2
    # fixed, the next call redoes only the failed run
    (run_dir / store.CHECKPOINT).unlink()
    assert main(args) == 0
    assert comparable(table_rows(out)) == comparable([good, bad])


def test_an_interrupted_run_continues_from_its_checkpoint(tiny, local_sweep, tmp_path):
    out = tmp_path / "sweep"
    shutil.copytree(local_sweep, out)
    rows = table_rows(out)
    run_dir = out / "runs" / rows[2]["run_id"]
    metrics = (run_dir / "metrics.csv").read_text()
    for name in ("summary.json", "metrics.csv", "params.npz"):
        (run_dir / name).unlink()
    calls = iter(range(1000))
    result = execute_run(None, [], None, resume=run_dir, figure=False, should_stop=lambda: next(calls) >= 17)
    assert result.status == "interrupted"
    like = build(load(run_dir / "config.toml")).initial_state()
    assert store.load_checkpoint(run_dir, like=like).step == 17
    assert main(sweep_args(tiny, out, "--workers", "1", "--no-figures")) == 0
    assert not (run_dir / store.CHECKPOINT).exists()
    assert (run_dir / "metrics.csv").read_text() == metrics
    after = table_rows(out)
    assert comparable(after) == comparable(rows)
    assert [r["wall_s"] for r in after][:2] == [r["wall_s"] for r in rows][:2]  # only that run was redone
    np.testing.assert_array_equal(np.load(run_dir / "params.npz")["B"],
                                  np.load(local_sweep / "runs" / rows[2]["run_id"] / "params.npz")["B"])


def test_a_pool_worker_gets_its_share_of_the_cpus():
    """The local pool's initializer caps each worker's kernels at threads.share(W), not the machine."""
    import subprocess

    code = ("import multiprocessing as mp, signal\n"
            "from metarep.compute import threads\n"
            "from metarep.running import pool\n"
            "pool._init_worker(mp.get_context('spawn').Event(), 4)\n"
            "print(threads.count(), threads.share(4), signal.getsignal(signal.SIGINT) is signal.SIG_IGN)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == [out[1], out[1], "True"] and int(out[0]) >= 1
