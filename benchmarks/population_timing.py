"""Population steps, one run and 64 runs batched (d = k' = 50): minimum and median of 7 blocks.

    python benchmarks/population_timing.py
    PYTHONPATH=/path/to/other/checkout/src python benchmarks/population_timing.py   # another version

Run two versions alternately, several times, to compare them on a machine that is not idle.
"""

import os
import time

import numpy as np

from metarep.linear.params import Params
from metarep.linear.population import population_step
from metarep.families.problem import make_problem


def best(fn, n: int, repeats: int = 7) -> tuple[float, float]:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        times.append((time.perf_counter() - t0) / n)
    return min(times) * 1e6, float(np.median(times)) * 1e6


def main() -> None:
    rng = np.random.default_rng(2)
    problem = make_problem(50, 5, task_cov=np.arange(1.0, 6.0), noise_std=2.0, rng=rng)
    one = Params(rng.standard_normal((50, 50)) / 7, np.zeros(50))
    S = 64
    batch = Params(rng.standard_normal((S, 50, 50)) / 7, np.zeros((S, 50)))
    kw = {"alpha": 0.1, "beta": 0.05, "m_in": 20}
    a = best(lambda: population_step(one, problem, **kw), 1000)
    b = best(lambda: population_step(batch, problem, **kw), 30)
    print(f"one run: min {a[0]:.1f}, median {a[1]:.1f} us/step; {S} runs batched: min {b[0] / S:.2f}, "
          f"median {b[1] / S:.2f} us per run-step (load average {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
