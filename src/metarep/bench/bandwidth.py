"""Machine read bandwidth, the yardstick that step times are compared with."""

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


if __name__ == "__main__":
    print(f"read bandwidth: {measure_read_bandwidth() / 1e9:.2f} GB/s")
