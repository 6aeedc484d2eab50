"""Every registered method's memory estimate (`resources.estimate_bytes`) against the peak it
measures: a run's traced allocations (tracemalloc sees every NumPy array; torch's own
allocations are not traced, so for the network the NumPy part is checked)."""

from __future__ import annotations

import gc
import tracemalloc

import pytest

from metarep import api
from metarep.methods import registered
from metarep.running.resources import estimate_bytes

#: the estimate may exceed the measured peak by this factor (it counts the heaviest method's and
#: backend's temporaries), never fall below it
SLACK = 10.0

PROBLEM = {"d": 12, "k": 2, "task_cov": [1.0, 2.0], "seed": 0}
TEST = {"tasks": 200, "m_test": 10}
#: the task data dominate; many small tasks, where an iterative method's per-task working arrays
#: dominate
SHAPES = {"data": {"tasks": 300, "m_in": 10, "m_out": 10},
          "tasks": {"tasks": 2000, "m_in": 1, "m_out": 1}}


def _config(method, shape: dict, *, tasks: int | None = None) -> dict:
    train = {**shape, "steps": 2, "log_every": 100, "beta": 0.01, **({"tasks": tasks} if tasks else {})}
    return {"problem": PROBLEM, "model": {"arch": method.arch, "width": 4}, "method": {"name": method.name},
            "train": train, "test": TEST}


def _peak(config) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        api.run(config)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


CASES = [pytest.param(m, s, id=f"{m.arch}-{m.name}-{s}") for m in registered() for s in SHAPES
         if s == "data" or (m.arch == "linear" and m.iterative)]


@pytest.mark.parametrize(("method", "shape"), CASES)
def test_the_estimate_bounds_the_measured_peak(method, shape):
    api.run(api.as_config(_config(method, SHAPES[shape], tasks=40)))      # compiles what it needs
    config = api.as_config(_config(method, SHAPES[shape]))
    measured, estimate = _peak(config), sum(estimate_bytes(config).values())
    print(f"{method.arch} {method.name} {shape}: peak {measured / 1e6:.2f} MB, estimate {estimate / 1e6:.2f} MB, "
          f"ratio {measured / estimate:.2f}")
    assert measured <= estimate <= SLACK * measured, (
        f"{method.name}: measured {measured / 1e6:.2f} MB, estimated {estimate / 1e6:.2f} MB "
        f"{ {k: round(v / 1e6, 2) for k, v in estimate_bytes(config).items()} }")
