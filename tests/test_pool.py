"""metarep.running.pool: the one process pool and kept results. A plain script (no main guard) may call
metarep.sweep, whose workers do not re-run it; a failed run makes the script exit non-zero; the
results are the same for any number of workers; a rerun computes only what is not kept."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

from metarep.running import pool

SCRIPT = """
import pathlib, sys
import metarep

print("top level ran", flush=True)
config = {{"problem": {{"d": 5, "k": 2, "seed": 0}}, "model": {{"width": 4}},
           "train": {{"tasks": 12, "m_in": 4, "m_out": 4, "steps": 15, "log_every": 5}},
           "test": {{"tasks": 20, "m_test": 4}}}}
out = pathlib.Path(sys.argv[1])
table = metarep.sweep(config, grid={{"train.m_in": [4, 6]}}, out=out, workers=2)
print(sorted(table["status"]))
{after}
"""
# a run whose checkpoint is garbage raises when the sweep continues it
BREAK_ONE = """
run_dir = out / "runs" / table["run_id"][0]
(run_dir / "summary.json").unlink()
(run_dir / "checkpoint.npz").write_bytes(b"not a checkpoint")
metarep.sweep(config, grid={"train.m_in": [4, 6]}, out=out, workers=2)
print("not reached")
"""


def _script(tmp_path, after: str = ""):
    path = tmp_path / "plain.py"
    path.write_text(textwrap.dedent(SCRIPT.format(after=after)))
    env = {**os.environ, "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, str(path), str(tmp_path / "sweep")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)


def test_a_plain_script_without_the_main_guard_sweeps_on_workers(tmp_path):
    done = _script(tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    # the workers did not run the script's top level again
    assert done.stdout.splitlines() == ["top level ran", "['completed', 'completed']"]
    assert "bootstrapping" not in done.stderr and "BrokenProcessPool" not in done.stderr


def test_a_failed_run_makes_the_script_exit_non_zero(tmp_path):
    from metarep.storage import store

    assert store.CHECKPOINT == "checkpoint.npz"
    done = _script(tmp_path, BREAK_ONE)
    assert done.returncode == 1 and "not reached" not in done.stdout
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("metarep.sweeps.run.RunsFailed: 1 of 2 runs failed") and "results.csv" in last


def _square(job):
    return {"value": job["x"] ** 2, "stopping": pool.stopping()}


@pytest.mark.parametrize("workers", [1, 2])
def test_the_results_come_back_in_job_order_whatever_the_workers(workers):
    jobs = [{"x": x} for x in range(5)]
    seen = []
    out = pool.parallel_map(_square, jobs, workers=workers, costs=[0, 3, 1, 2, 0],
                            on_done=lambda i, result, seconds: seen.append(i))
    assert out == [{"value": x * x, "stopping": False} for x in range(5)]
    assert sorted(seen) == list(range(5))
    if workers == 1:
        assert seen == [1, 3, 2, 0, 4]        # longest first


def test_a_stop_starts_no_more_jobs_and_running_ones_see_it():
    seen = []
    stopped = pool.run_jobs(_square, [{"x": x} for x in range(4)], workers=1, should_stop=lambda: len(seen) >= 2,
                            on_done=lambda i, result, seconds: seen.append(result))
    assert stopped and len(seen) == 2


def test_a_job_error_raises_or_goes_to_on_error():
    jobs = [{"x": 1}, {"y": 2}]
    with pytest.raises(KeyError):
        pool.parallel_map(_square, jobs, workers=1)
    errors = []
    pool.run_jobs(_square, jobs, workers=1, on_done=lambda *a: None, on_error=lambda i, err: errors.append(i))
    assert errors == [1]


def test_a_function_of_the_script_is_refused_for_workers():
    def local(job):
        return job

    local.__module__ = "__main__"
    with pytest.raises(ValueError, match="defined in the script"):
        pool.run_jobs(local, [1, 2], workers=2, on_done=lambda *a: None)


def _nap(seconds):
    time.sleep(seconds)
    return seconds


def test_an_interruption_ends_the_jobs_that_do_not_stop(monkeypatch):
    monkeypatch.setattr(pool, "STOP_GRACE_S", 0.5)

    def interrupted(i, result, seconds):
        raise KeyboardInterrupt

    start = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        pool.run_jobs(_nap, [0.1, 60.0, 60.0], workers=2, on_done=interrupted)
    assert time.perf_counter() - start < 30
