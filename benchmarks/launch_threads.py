"""FO-ANIL steps on metarep's default threads and on one thread, interleaved, and how many kernel
launches the default ran on more than one thread (`threads.launch_count`).

    python benchmarks/launch_threads.py N M D ROUNDS      # e.g. 5000 20 50 8, or 2000 10 20 15
"""

import contextlib
import statistics
import sys
import time

import numpy as np

from metarep.compute import kernels, threads
from metarep.methods.fo_anil import fo_anil_gradient
from metarep.linear.params import Params
from metarep.families.problem import make_problem, sample_tasks


def main() -> None:
    N, m, d, rounds = (int(a) for a in sys.argv[1:5])
    rng = np.random.default_rng(0)
    tasks = sample_tasks(make_problem(d, 3, rng=rng), N, m, m, rng)
    params = Params(rng.standard_normal((d, d)) / np.sqrt(d), 0.1 * rng.standard_normal(d))
    used: list[int] = []
    count = threads.launch_count

    def counting() -> int:
        used.append(count())
        return used[-1]

    threads.launch_count = counting

    def block(n: int) -> None:
        with kernels.step_threads():
            for _ in range(n):
                fo_anil_gradient(params, tasks, alpha=0.1)

    block(3)
    t0 = time.perf_counter()
    block(3)
    n = max(3, int(0.3 / ((time.perf_counter() - t0) / 3)))
    modes = {"default": contextlib.nullcontext, "one thread": lambda: threads.limited(1)}
    times: dict[str, list[float]] = {k: [] for k in modes}
    used.clear()
    for _ in range(rounds):
        for key, ctx in modes.items():
            with ctx():
                block(1)
                t0 = time.perf_counter()
                block(n)
                times[key].append((time.perf_counter() - t0) / n * 1e3)
    ratios = [a / b for a, b in zip(times["default"], times["one thread"])]
    multi = sum(u > 1 for u in used) / max(1, len(used))
    print(f"N={N} d={d}: default {statistics.median(times['default']):.2f} ms, one thread "
          f"{statistics.median(times['one thread']):.2f} ms, ratio {statistics.median(ratios):.2f} "
          f"({min(ratios):.2f}-{max(ratios):.2f}); launches on more than one thread: {multi:.0%}")


if __name__ == "__main__":
    main()
