"""The benchmark's performance targets, each PASS, FAIL or n/a, from the rows of a run."""

from __future__ import annotations

import math
from dataclasses import dataclass

from metarep.bench.contenders._common import FIRST_ORDER

#: targets (all for FO-ANIL in float64 against the active metarep backend)
TARGET_SPEEDUP = {"numpy_batched": 3.0, "higher_loop": 100.0, "jax_jit_vmap": 1.0, "torch_func": 1.0}
TARGET_BANDWIDTH_FRACTION = 0.5
TARGET_POPULATION_STEPS = 100_000
TARGET_POPULATION_SECONDS = 10.0
TARGET_BATCH_SPEEDUP = 20.0
#: metarep's default within this factor of the best of its one-thread path and the NumPy backend
TARGET_THREADS_RATIO = 1.1


@dataclass
class Target:
    name: str
    required: str
    measured: str
    status: str                       # "PASS", "FAIL" or "n/a"



def _pop_size(pop: dict | None, key: str) -> str:
    return str(pop[key]) if pop and key in pop else "?"


class _Marker:
    """' (busy)' after a value measured while other processes kept more than `threshold` cores busy."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold

    def __call__(self, *loads) -> str:
        return " (busy)" if any(x is not None and x > self.threshold for x in loads) else ""


def _speedups(by: dict, ref, reference: str, mark: _Marker) -> list[Target]:
    labels = {"numpy_batched": "plain vectorised NumPy", "higher_loop": "per-task higher loop",
              "jax_jit_vmap": "jax.jit(vmap)", "torch_func": "torch.func (vmap)"}
    targets = []
    for name, need in TARGET_SPEEDUP.items():
        title = f"FO-ANIL float64: {reference} vs {labels[name]}"
        required = f">= {need:g}x faster" if need > 1 else "faster (> 1x)"
        other = by.get((FIRST_ORDER, "float64", name))
        if ref is None or ref.seconds is None:
            targets.append(Target(title, required, "metarep not timed", "n/a"))
        elif other is None or other.seconds is None:
            why = "not run" if other is None else other.status
            targets.append(Target(title, required, f"{name} {why}", "n/a"))
        else:
            speedup = other.seconds / ref.seconds
            ok = speedup >= need if need > 1 else speedup > 1.0
            targets.append(Target(title, required, f"{speedup:.2f}x{mark(ref.other_cores, other.other_cores)}",
                                  "PASS" if ok else "FAIL"))
    return targets


def _bandwidth(ref, reference: str, read_bw: float | None, mark: _Marker) -> Target:
    title = f"FO-ANIL float64: {reference} effective bandwidth / read bandwidth"
    required = f">= {TARGET_BANDWIDTH_FRACTION:.0%}"
    if ref is None or ref.seconds is None or not read_bw:
        return Target(title, required, "not measured", "n/a")
    frac = ref.task_bytes / ref.seconds / read_bw
    return Target(title, required, f"{frac:.0%} ({ref.gbps:.1f} of {read_bw / 1e9:.1f} GB/s){mark(ref.other_cores)}",
                  "PASS" if frac >= TARGET_BANDWIDTH_FRACTION else "FAIL")


def threads_target(by: dict, reference: str, load: int) -> Target:
    """metarep's default (its own choice of threads) against the best of its one-thread path and
    the NumPy backend, with `load` CPU-bound processes beside them."""
    one = f"{reference}/1thread"
    title = (f"FO-ANIL float64, {load} CPU-bound process{'es' if load != 1 else ''} beside it: "
             f"{reference} vs the best of {one} and metarep[numpy]")
    required = f"<= {TARGET_THREADS_RATIO:g}x the best"
    ref = by.get((FIRST_ORDER, "float64", reference))
    others = [r for r in (by.get((FIRST_ORDER, "float64", one)), by.get((FIRST_ORDER, "float64", "metarep[numpy]")))
              if r is not None and r.seconds is not None and r.contender != reference]
    if ref is None or ref.seconds is None or not others:
        return Target(title, required, "not measured", "n/a")
    best = min(others, key=lambda r: r.seconds)
    ratio = ref.seconds / best.seconds
    return Target(title, required, f"{ratio:.2f}x {best.contender}",
                  "PASS" if ratio <= TARGET_THREADS_RATIO else "FAIL")


def _population(pop: dict | None, mark: _Marker) -> list[Target]:
    title = (f"population: {TARGET_POPULATION_STEPS:,} steps at d = {_pop_size(pop, 'd')}, "
             f"k' = {_pop_size(pop, 'width')}")
    required = f"< {TARGET_POPULATION_SECONDS:g} s"
    if pop is None or "error" in pop:
        measured = "not measured" if pop is None else f"failed: {pop['error']}"
        return [Target(title, required, measured, "n/a"),
                Target("population: runs batched vs one after another", f">= {TARGET_BATCH_SPEEDUP:g}x throughput",
                       measured, "n/a")]
    secs = pop["seconds_for_target"]
    how = f" (extrapolated from {pop['steps']} steps)" if pop["extrapolated"] else ""
    first = Target(title, required, f"{secs:.2f} s{how}{mark(pop.get('other_cores'))}",
                   "PASS" if secs < TARGET_POPULATION_SECONDS else "FAIL")
    title = f"population: {pop['batch']} runs batched vs one after another"
    second = Target(title, f">= {TARGET_BATCH_SPEEDUP:g}x throughput", f"{pop['batch_speedup']:.1f}x"
                    f"{mark(pop.get('other_cores'), pop.get('batch_other_cores'))} (ceiling "
                    f"{pop['batch_speedup_ceiling']:.1f}x at the matrix-product rate)",
                    "PASS" if pop["batch_speedup"] >= TARGET_BATCH_SPEEDUP else "FAIL")
    return [first, second]


def evaluate_targets(rows: list, reference: str, read_bw: float | None, pop: dict | None,
                     busy_threshold: float = math.inf, load: int = 0) -> list[Target]:
    """The performance targets, each PASS, FAIL, or n/a when not measured in this run. A value
    measured while other processes kept the machine busy is marked "(busy)"; `load` is the
    number of CPU-bound processes the benchmark itself ran beside the contenders."""
    by = {(r.method, r.dtype, r.contender): r for r in rows}
    mark = _Marker(busy_threshold)
    ref = by.get((FIRST_ORDER, "float64", reference))
    return [*_speedups(by, ref, reference, mark), _bandwidth(ref, reference, read_bw, mark),
            threads_target(by, reference, load), *_population(pop, mark)]
