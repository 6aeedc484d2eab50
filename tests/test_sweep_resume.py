"""A sweep killed with SIGKILL mid-way, then run again, ends with the table of a sweep that was
never interrupted: no run lost, duplicated or half written."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from metarep.cli import main
from metarep.engine import run
from metarep.storage.results import Results, comparable, row_from_summary
from metarep.sweeps import plan

TINY = """
[problem]
d = 5
k = 2

[model]
width = 5

[method]
name = "fo-anil"

[train]
tasks = 20
steps = 30
log_every = 10
checkpoint_every = 5

[test]
tasks = 50
"""
TOTAL = 2 * 3


def _args(config: Path, out: Path, *extra: str) -> list[str]:
    return ["sweep", str(config), "--grid", "train.m_in=5,10", "--seeds", "0-2", "--out", str(out), "--quiet",
            *extra]


def _rows_now(db: Path) -> int:
    """Rows committed so far, read as a separate (read-only) client would; -1 before the table exists."""
    if not db.exists():
        return -1
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return conn.execute("SELECT count(*) FROM runs").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return -1


def _uninterrupted(config: Path) -> list[dict]:
    """The rows an uninterrupted sweep records: every run computed here, in memory, in grid order."""
    sweep = plan(config, ["train.m_in=5,10"], "0-2")
    rows = [row_from_summary(r.run_id, r.index, r.point, r.seed, run(r.config)[2]) for r in sweep.runs]
    return [{k: v for k, v in row.items() if k != "idx"} for row in rows]


def test_killed_sweep_resumes_to_the_same_table(tmp_path):
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    out = tmp_path / "killed"
    # figures on and one worker: slow enough (a few tenths of a second a run) to be caught mid-way
    command = [sys.executable, "-m", "metarep.cli", *_args(config, out, "--workers", "1")]
    proc = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    db = out / "results.sqlite"
    deadline = time.monotonic() + 90
    try:
        while _rows_now(db) < 2:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the sweep recorded no run in time"
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the parent and its workers, at once
        proc.wait()
        proc.stderr.close()
    recorded = _rows_now(db)
    assert 2 <= recorded < TOTAL, "the sweep finished before it could be killed"
    with Results(db) as table:  # every committed row is whole
        rows = table.rows()
    assert all(r["status"] == "completed" and r["excess_risk"] is not None for r in rows)
    for r in rows:
        assert (out / "runs" / r["run_id"] / "summary.json").exists()

    assert main(_args(config, out, "--workers", "1", "--no-figures")) == 0  # figures change no number
    with Results(db) as table:
        resumed = table.rows()
    expected = _uninterrupted(config)
    assert len(resumed) == TOTAL == len({r["run_id"] for r in resumed})
    assert comparable(resumed) == comparable(expected)
    assert {r["run_id"]: r["wall_s"] for r in resumed if r["run_id"] in {x["run_id"] for x in rows}} == \
        {r["run_id"]: r["wall_s"] for r in rows}  # runs done before the kill were not redone
    for run_dir in (out / "runs").iterdir():
        assert (run_dir / "summary.json").exists()
        assert not (run_dir / "checkpoint.npz").exists()
        assert not list(run_dir.glob(".*.tmp"))
    assert (out / "results.csv").read_text().count("\n") == TOTAL + 1
