"""Fault injection: kill real `metarep run` processes and check that resuming ends bit-identical.

Every test starts `python -m metarep.cli run ...` in a subprocess, kills it (SIGKILL at random
instants, or SIGINT/SIGTERM), resumes until the run is done, and compares params.npz,
metrics.csv and summary.json with a run that was never interrupted. Checkpoints are written
every step, and the METAREP_TEST_WRITE_DELAY hook (store.atomic_write) holds each process a few
milliseconds between writing a file and renaming it, so that many kills land in the middle of a
checkpoint write (and a step takes a few milliseconds even on a fast disk). The counts of faults
injected and survived are printed at the end.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

REGIMES = {"finite": "20", "population": '"inf"', "online": '"online"'}
STEPS = 160

COUNTS = {"SIGKILL": 0, "of which before config.toml existed": 0, "of which during a file write": 0,
          "of which while writing results": 0, "SIGINT": 0, "SIGTERM": 0, "double SIGINT": 0,
          "survived": 0, "interrupted runs ended bit-identical": 0, "torn checkpoints seen": 0}
FAULT_KINDS = ("SIGKILL", "SIGINT", "SIGTERM", "double SIGINT")


def survived(faults: int) -> None:
    """Book `faults` as survived: the run they hit has just ended bit-identical."""
    COUNTS["survived"] += faults
    COUNTS["interrupted runs ended bit-identical"] += 1


@pytest.fixture(scope="module", autouse=True)
def report_counts(request):
    yield
    faults = sum(COUNTS[k] for k in FAULT_KINDS)
    line = (f"fault injection: {faults} faults injected, {COUNTS['survived']} survived; "
            + ", ".join(f"{k}: {v}" for k, v in COUNTS.items() if k != "survived"))
    show(request, line)


def show(request, line: str) -> None:
    """Print past pytest's output capture, so the line shows in a plain `pytest -q` run."""
    capman = request.config.pluginmanager.getplugin("capturemanager")
    if capman is None:
        print(line)
        return
    with capman.global_and_fixture_disabled():
        print("\n" + line)


def _config(tmp: Path, regime: str, steps: int = STEPS) -> Path:
    path = tmp / f"{regime}.toml"
    path.write_text(f"""[problem]
d = 6
k = 2
task_cov = [1.0, 2.0]
[model]
width = 4
[train]
tasks = {REGIMES[regime]}
batch_tasks = 8
m_in = 5
m_out = 5
alpha = 0.1
beta = 0.05
steps = {steps}
log_every = 7
checkpoint_every = 1
seed = 3
[test]
m_test = 5
tasks = 40
""")
    return path


def _env(write_delay: float = 0.0) -> dict:
    env = dict(os.environ, METAREP_KERNEL="numpy", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               MKL_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    env.pop("METAREP_TEST_WRITE_DELAY", None)
    if write_delay:
        env["METAREP_TEST_WRITE_DELAY"] = str(write_delay)
    return env


def _cmd(*args) -> list[str]:
    return [sys.executable, "-m", "metarep.cli", "run", *map(str, args), "--quiet"]


def _start(config: Path, out: Path, write_delay: float = 0.0) -> subprocess.Popen:
    """A fresh run when the directory holds no config.toml yet, else a resume (as a user would)."""
    args = ("--resume", out) if (out / "config.toml").exists() else (config, "--out", out)
    return subprocess.Popen(_cmd(*args), env=_env(write_delay), stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err.decode(errors="replace")


def _checkpoint_intact(out: Path) -> bool:
    path = out / "checkpoint.npz"
    if not path.exists():
        return True
    try:
        with np.load(path, allow_pickle=False) as data:
            json.loads(data["meta"].tobytes().decode())
            data["B"], data["w"], data["history"]
    except Exception:  # noqa: BLE001 - any failure to read is a torn checkpoint
        return False
    return True


def _without_timings(obj):
    if isinstance(obj, dict):
        return {k: _without_timings(v) for k, v in obj.items()
                if not any(word in k for word in ("time", "seconds", "elapsed", "duration"))}
    if isinstance(obj, list):
        return [_without_timings(v) for v in obj]
    return obj


def assert_identical(ref: Path, out: Path) -> None:
    assert (out / "metrics.csv").read_bytes() == (ref / "metrics.csv").read_bytes()
    assert (out / "params.npz").read_bytes() == (ref / "params.npz").read_bytes()
    with np.load(ref / "params.npz", allow_pickle=False) as a, np.load(out / "params.npz", allow_pickle=False) as b:
        assert a.files == b.files
        for name in a.files:
            np.testing.assert_array_equal(a[name], b[name], strict=True)
    s_ref = json.loads((ref / "summary.json").read_text())
    s_out = json.loads((out / "summary.json").read_text())
    assert json.dumps(_without_timings(s_out), sort_keys=True) == json.dumps(_without_timings(s_ref), sort_keys=True)
    assert s_out["status"] == "completed" and s_out["steps"] == s_ref["steps"]
    assert not (out / "checkpoint.npz").exists() and not list(out.glob(".*.tmp"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Uninterrupted runs of each regime's config, started together and awaited on first use."""
    root = tmp_path_factory.mktemp("reference")
    procs = {regime: subprocess.Popen(_cmd(_config(root, regime), "--out", root / regime), env=_env(),
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE) for regime in REGIMES}

    def get(regime: str) -> Path:
        proc = procs[regime]
        if proc.returncode is None:
            rc, err = _finish(proc)
            assert rc == 0, err
        return root / regime

    yield get
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _identity(path: Path):
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60) -> bool:
    """Wait until `proc` has written `path` (a new file, not one left by an earlier process);
    False if the process ended first.

    Signals sent before this point would reach Python while it starts up, before metarep
    installs its handlers: the process then dies without writing anything."""
    before = _identity(path)
    deadline = time.monotonic() + timeout
    while _identity(path) in (None, before):
        if proc.poll() is not None:
            return False
        assert time.monotonic() < deadline, f"{path} was never written"
        time.sleep(0.005)
    return True


def _kill_and_resume(config: Path, out: Path, rng: random.Random, kills: int) -> dict:
    """SIGKILL `kills` processes (resuming after each), then let one finish.

    The first kill, and one in five of the others, lands at a random instant of the first 0.4 s
    (often while Python starts, before config.toml exists); the others wait until the process
    has written a checkpoint of its own and then strike at a random instant of the training
    loop, which with a checkpoint every step is mostly spent inside checkpoint writes."""
    seen = {"kills": 0, "before_config": 0, "mid_write": 0, "torn": 0, "attempts": 0}
    while True:
        seen["attempts"] += 1
        proc = _start(config, out, write_delay=0.01 if seen["attempts"] % 2 else 0.004)
        if seen["kills"] < kills and seen["attempts"] <= 4 * kills:
            if seen["attempts"] == 1 or rng.random() < 0.2:
                time.sleep(rng.uniform(0.0, 0.4))
            elif _wait_for(out / "checkpoint.npz", proc):
                time.sleep(rng.uniform(0.0, 0.15))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.communicate()
                seen["kills"] += 1
                seen["before_config"] += not (out / "config.toml").exists()
                seen["mid_write"] += bool(list(out.glob(".*.tmp"))) if out.exists() else 0
                seen["torn"] += not _checkpoint_intact(out)
                continue
        rc, err = _finish(proc)
        assert rc == 0, err
        return seen


def test_sigkill_at_random_instants_then_resume_is_bit_identical(tmp_path, reference):
    """Each regime (finite, population, online) is killed 4 times, mostly in the middle of a
    checkpoint write, and resumed until done; the three regimes run side by side."""

    def one(regime: str, seed: int) -> dict:
        out = tmp_path / f"run-{regime}"
        seen = _kill_and_resume(_config(tmp_path, regime), out, random.Random(seed), kills=4)
        assert_identical(reference(regime), out)
        return seen

    with ThreadPoolExecutor(len(REGIMES)) as pool:
        futures = [pool.submit(one, regime, 1000 + i) for i, regime in enumerate(REGIMES)]
        results = [f.result() for f in futures]
    for seen in results:
        COUNTS["SIGKILL"] += seen["kills"]
        COUNTS["of which before config.toml existed"] += seen["before_config"]
        COUNTS["of which during a file write"] += seen["mid_write"]
        COUNTS["torn checkpoints seen"] += seen["torn"]
        survived(seen["kills"])
    assert sum(s["torn"] for s in results) == 0
    assert sum(s["kills"] for s in results) >= 8


@pytest.mark.parametrize("regime, signals", [("online", (signal.SIGINT, signal.SIGTERM)),
                                             ("finite", (signal.SIGTERM, signal.SIGINT))])
def test_sigint_sigterm_checkpoint_exit_130_and_resume_identically(tmp_path, reference, regime, signals):
    config = _config(tmp_path, regime)
    out = tmp_path / "run"
    rng = random.Random(7)
    sent = 0
    for sig in signals:
        proc = _start(config, out, write_delay=0.005)  # at least 5 ms a step, however fast the disk
        if not _wait_for(out / "checkpoint.npz", proc):
            break  # finished before a signal could be sent
        time.sleep(rng.uniform(0.0, 0.15))
        proc.send_signal(sig)
        rc, err = _finish(proc)
        if rc == 0:  # finished before the signal arrived
            break
        assert rc == 130, err
        assert "interrupted at step" in err and "--resume" in err and "Traceback" not in err
        COUNTS[signal.Signals(sig).name] += 1
        sent += 1
        with np.load(out / "checkpoint.npz", allow_pickle=False) as data:
            meta = json.loads(data["meta"].tobytes().decode())
        assert meta["status"] == "interrupted" and 0 <= meta["step"] < STEPS
        assert not (out / "summary.json").exists()
    else:
        rc, err = _finish(_start(config, out))
        assert rc == 0, err
    assert sent >= 1
    assert_identical(reference(regime), out)
    survived(sent)


def test_second_sigint_aborts_at_once_and_the_checkpoint_stays_valid(tmp_path, reference):
    """Two signals in quick succession: the second lands while the first is being honoured
    (often inside the checkpoint write). The process exits 130 and a resume still ends identically."""
    config = _config(tmp_path, "population")
    out = tmp_path / "run"
    proc = _start(config, out, write_delay=0.02)
    assert _wait_for(out / "checkpoint.npz", proc)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    rc, err = _finish(proc)
    assert rc == 130, err
    assert "Traceback" not in err
    COUNTS["double SIGINT"] += 1
    assert _checkpoint_intact(out)
    rc, err = _finish(_start(config, out))
    assert rc == 0, err
    assert_identical(reference("population"), out)
    survived(1)


def test_sigkill_while_writing_results_then_resume_is_identical(tmp_path, reference):
    """Kill after metrics.csv is written but before summary.json (each write is slowed down):
    the directory is not done, and a resume rewrites every result identically. This run only
    checkpoints at step 0 (checkpoint_every = 0) and still matches the reference, which
    checkpointed every step."""
    config = _config(tmp_path, "finite")
    config.write_text(config.read_text().replace("checkpoint_every = 1", "checkpoint_every = 0"))
    out = tmp_path / "run"
    proc = _start(config, out, write_delay=0.05)
    assert _wait_for(out / "metrics.csv", proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    COUNTS["SIGKILL"] += 1
    COUNTS["of which while writing results"] += 1
    assert not (out / "summary.json").exists() and (out / "checkpoint.npz").exists()
    assert _checkpoint_intact(out)
    rc, err = _finish(_start(config, out))
    assert rc == 0, err
    assert_identical(reference("finite"), out)
    survived(1)


def _checkpoint_meta(out: Path) -> tuple[dict, np.ndarray] | None:
    try:
        with np.load(out / "checkpoint.npz", allow_pickle=False) as data:
            return json.loads(data["meta"].tobytes().decode()), data["history"].copy()
    except (OSError, ValueError, KeyError):
        return None


def test_sigint_during_a_long_test_evaluation_exits_130_at_once_and_resume_only_evaluates(tmp_path):
    """Training ends with a checkpoint of its last step; a signal during the test evaluation
    (which has no step boundary) stops it within a second; the resume evaluates, never trains."""
    steps = 30
    config = _config(tmp_path, "finite", steps=steps)
    # long enough (seconds even on an idle machine) that the signal lands inside the evaluation
    config.write_text(config.read_text().replace("m_test = 5\ntasks = 40", "m_test = 40\ntasks = 1000000"))
    out = tmp_path / "run"
    proc = _start(config, out)
    deadline = time.monotonic() + 60
    while True:  # the checkpoint written when training completed: the last step, its final metrics row
        meta = _checkpoint_meta(out) if proc.poll() is None else None
        if meta and meta[0]["step"] == steps and meta[1][-1, 0] == steps:
            break
        assert proc.poll() is None and time.monotonic() < deadline, "training never completed"
        time.sleep(0.01)
    time.sleep(0.3)
    assert proc.poll() is None, "the evaluation ended before the signal"
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    rc, err = _finish(proc)
    assert rc == 130 and time.monotonic() - sent < 2.0, err
    assert "test evaluation" in err and f"--resume {out}" in err and "Traceback" not in err
    COUNTS["SIGINT"] += 1
    meta, history = _checkpoint_meta(out)
    assert meta["step"] == steps and history[-1, 0] == steps and not (out / "summary.json").exists()
    resumed = subprocess.run([sys.executable, "-m", "metarep.cli", "run", "--resume", str(out)], env=_env(),
                             capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert f"training complete (step {steps}): evaluating on 1000000 test tasks" in resumed.stderr
    assert "steps:" not in resumed.stderr  # no training progress
    rows = np.loadtxt(out / "metrics.csv", delimiter=",", skiprows=1, ndmin=2)
    np.testing.assert_array_equal(rows, history)
    assert json.loads((out / "summary.json").read_text())["test"]["tasks"] == 1000000
    survived(1)
