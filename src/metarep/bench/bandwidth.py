"""The machine's yardsticks: read bandwidth (for the step, which is memory-bound) and matrix-product
throughput (for population steps, which are compute-bound)."""

from __future__ import annotations

import statistics
import time

import numpy as np


def measure_read_bandwidth(nbytes: float = 400e6, repeats: int = 5) -> float:
    """Return the read bandwidth in bytes/s.

    Allocates a float64 array of about ``nbytes`` bytes, reduces it once with
    ``a.sum()`` as a warm-up, then returns ``a.nbytes / median(time)`` over
    ``repeats`` timed reductions.
    """
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    n = max(1, int(nbytes) // 8)
    a = np.ones(n, dtype=np.float64)  # written, so every page is resident
    a.sum()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a.sum()
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
