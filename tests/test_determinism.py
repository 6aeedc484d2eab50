"""Determinism: the same config and seeds give bit-identical results, across processes and
across thread counts (BLAS, OpenMP, metarep's kernels); the numpy and numba kernels agree to ~1e-12."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from metarep.compute import kernels
from metarep.config.schema import validate
from metarep.engine import run

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "METAREP_THREADS")

# Runs every regime with every available kernel in one process and prints a digest of each
# result: the parameters' bytes, the metric rows and the summary. Every kernel call is spread
# over the threads, however small.
SCRIPT = """
import hashlib, json, sys
import numpy as np
from metarep.compute import kernels, threads
from metarep.config.schema import validate
from metarep.engine import run

kernels.PARALLEL_MIN_BYTES = 0

out = {}
for tasks in (200, "online", "inf"):
    data = {"problem": {"d": 24, "k": 3, "task_cov": [1.0, 2.0, 0.5], "task_mean": 0.3},
            "model": {"width": 16},
            "train": {"tasks": tasks, "batch_tasks": 200, "m_in": 8, "m_out": 6, "beta": 0.1, "steps": 25,
                      "log_every": 4, "seed": 5},
            "test": {"m_test": 8, "tasks": 300}}
    for backend in kernels.available_backends():
        with kernels.use(backend):
            _, state, summary = run(validate(data))
        h = hashlib.sha256()
        for a in state.params:
            h.update(np.ascontiguousarray(a).tobytes())
        h.update(repr(state.history).encode())
        h.update(json.dumps(summary, sort_keys=True).encode())
        out[f"{tasks}-{backend}"] = h.hexdigest()
out["threads"] = threads.count()
json.dump(out, sys.stdout)
"""


def test_bit_identical_across_thread_counts_and_processes():
    """1 vs 2 threads for BLAS/OpenMP and metarep's kernels, in separate processes: every regime,
    every kernel (the numba kernels split the 200 tasks over their threads; the numpy one calls BLAS)."""
    procs = {threads: subprocess.Popen([sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       env=dict(os.environ, **{var: str(threads) for var in THREAD_VARS}))
             for threads in (1, 2)}
    digests = {}
    for threads, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()
        digests[threads] = json.loads(out)
    threads = {n: d.pop("threads") for n, d in digests.items()}
    assert threads == {1: 1, 2: 2}
    assert len(digests[1]) >= 3 and digests[1] == digests[2]


@pytest.mark.skipif("numba" not in kernels.available_backends(), reason="numba is not installed")
def test_numpy_and_numba_kernels_agree_to_rounding():
    """Equal to ~1e-12 relative, not bit for bit: the numba kernel sums in another order."""
    config = validate({"problem": {"d": 24, "k": 3, "task_cov": [1.0, 2.0, 0.5]}, "model": {"width": 16},
                       "train": {"tasks": 200, "m_in": 8, "m_out": 6, "steps": 25, "beta": 0.1},
                       "test": {"tasks": 100}})
    results = {}
    for name in ("numpy", "numba"):
        with kernels.use(name):
            results[name] = run(config)[1].params
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
    base = {"problem": {"d": 6, "k": 2}, "train": {"tasks": "online", "batch_tasks": 10, "steps": 5},
            "test": {"tasks": 20}}
    other = {**base, "train": {**base["train"], "seed": 1}}
    assert not np.array_equal(run(validate(base))[1].params.B, run(validate(other))[1].params.B)
