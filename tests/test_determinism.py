"""Determinism: the same config and seeds give bit-identical results, across processes and
across thread counts (BLAS, OpenMP, numba); the numpy and numba kernels agree to ~1e-12."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from metarep import kernels
from metarep.config import validate
from metarep.runner import run

CONFIG = """[problem]
d = 24
k = 3
task_cov = [1.0, 2.0, 0.5]
task_mean = 0.3
[model]
width = 16
[train]
tasks = {tasks}
batch_tasks = 200
m_in = 8
m_out = 6
alpha = 0.1
beta = 0.1
steps = 25
log_every = 4
seed = 5
[test]
m_test = 8
tasks = 300
"""
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def _spawn(tmp: Path, tasks: str, backend: str, threads: int) -> tuple[subprocess.Popen, Path]:
    name = f"{tasks.strip(chr(34))}-{backend}-{threads}"
    config = tmp / f"{name}.toml"
    config.write_text(CONFIG.format(tasks=tasks))
    env = dict(os.environ, METAREP_KERNEL=backend, **{var: str(threads) for var in THREAD_VARS})
    out = tmp / name
    proc = subprocess.Popen([sys.executable, "-m", "metarep.cli", "run", str(config), "--out", str(out), "--quiet"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return proc, out


def _wait(proc: subprocess.Popen) -> None:
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()


def _same_bytes(a: Path, b: Path) -> None:
    for name in ("params.npz", "metrics.csv", "summary.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), f"{name} differs between {a.name} and {b.name}"


def test_bit_identical_across_thread_counts_and_processes(tmp_path):
    """1 vs 2 threads for BLAS/OpenMP/numba: the numba kernel on finite tasks (its parallel loop
    splits the 200 tasks over the threads), the numpy kernel on online tasks (BLAS calls)."""
    cases = [("200", "numba" if "numba" in kernels.available_backends() else "numpy"), ('"online"', "numpy")]
    jobs = {(tasks, backend, threads): _spawn(tmp_path, tasks, backend, threads)
            for tasks, backend in cases for threads in (1, 2)}
    for proc, _ in jobs.values():
        _wait(proc)
    for tasks, backend in cases:
        _same_bytes(jobs[tasks, backend, 1][1], jobs[tasks, backend, 2][1])


@pytest.mark.skipif("numba" not in kernels.available_backends(), reason="numba is not installed")
def test_numpy_and_numba_kernels_agree_to_rounding():
    """Equal to ~1e-12 relative, not bit for bit: the numba kernel sums in another order."""
    config = validate({"problem": {"d": 24, "k": 3, "task_cov": [1.0, 2.0, 0.5]}, "model": {"width": 16},
                       "train": {"tasks": 200, "m_in": 8, "m_out": 6, "steps": 25, "beta": 0.1},
                       "test": {"tasks": 100}})
    previous = kernels.backend()
    try:
        results = {}
        for name in ("numpy", "numba"):
            kernels.set_backend(name)
            results[name] = run(config)[1].params
    finally:
        kernels.set_backend(previous)
    for a, b in zip(results["numpy"], results["numba"]):
        assert np.abs(a - b).max() <= 1e-11 * np.abs(a).max()


def test_same_seeds_same_results_in_process_every_regime():
    for tasks in (40, "inf", "online"):
        data = {"problem": {"d": 6, "k": 2}, "model": {"width": 5},
                "train": {"tasks": tasks, "batch_tasks": 30, "steps": 30, "log_every": 5, "seed": 9},
                "test": {"tasks": 50}}
        (_, s1, sum1), (_, s2, sum2) = run(validate(data)), run(validate(data))
        np.testing.assert_array_equal(s1.params.B, s2.params.B, strict=True)
        np.testing.assert_array_equal(s1.params.w, s2.params.w, strict=True)
        assert s1.history == s2.history and sum1 == sum2


def test_different_seeds_give_different_results():
    base = {"problem": {"d": 6, "k": 2}, "train": {"tasks": "online", "batch_tasks": 10, "steps": 5}, "test": {"tasks": 20}}
    other = {**base, "train": {**base["train"], "seed": 1}}
    assert not np.array_equal(run(validate(base))[1].params.B, run(validate(other))[1].params.B)
