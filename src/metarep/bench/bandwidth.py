"""The machine's yardsticks: read bandwidth (for the step, which is memory-bound) and matrix-product
throughput (for population steps, which are compute-bound)."""

from __future__ import annotations

import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np


def usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def measure_read_bandwidth(nbytes: float = 400e6, repeats: int = 5, threads: int | None = None) -> float:
    """Return the read bandwidth in bytes/s, with all usable cores reading (as the step does).

    Allocates a float64 array of about ``nbytes`` bytes, reduces it once as a warm-up, then
    returns ``a.nbytes / median(time)`` over ``repeats`` timed reductions, each one ``sum`` per
    thread over an equal slice (NumPy releases the GIL while it sums). ``threads`` defaults to
    the usable cores.
    """
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    threads = usable_cores() if threads is None else max(1, int(threads))
    n = max(1, int(nbytes) // 8)
    a = np.ones(n, dtype=np.float64)  # written, so every page is resident
    parts = np.array_split(a, threads)
    with ThreadPoolExecutor(threads) as pool:
        def read() -> float:
            return sum(pool.map(np.sum, parts))
        read()  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            read()
            times.append(time.perf_counter() - t0)
    return a.nbytes / statistics.median(times)


def measure_gemm_rate(n: int = 1024, repeats: int = 5) -> float:
    """Return the float64 matrix-product throughput in flop/s: 2 n^3 / median(time) of
    ``a @ a`` for an (n, n) array, on NumPy's BLAS with its default threads (all cores)."""
    if repeats < 1 or n < 1:
        raise ValueError("n and repeats must be >= 1")
    a = np.random.default_rng(0).standard_normal((n, n))
    a @ a  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ a
        times.append(time.perf_counter() - t0)
    return 2.0 * n**3 / statistics.median(times)


if __name__ == "__main__":
    print(f"read bandwidth: {measure_read_bandwidth() / 1e9:.2f} GB/s")
    print(f"float64 matrix products: {measure_gemm_rate() / 1e9:.1f} GFLOP/s")
