"""How many tasks fit in memory: task data plus the working memory of one outer step.

Task data is X_in, y_in, X_out, y_out: N (m_in + m_out) (d + 1) numbers. One step of FO-ANIL or
exact ANIL also holds a few (N, d) and (N, k') arrays (prediction gradients, adapted heads,
predictions); `measure_step_memory` measures that peak with tracemalloc, which NumPy reports its
allocations to.
"""

from __future__ import annotations

import gc
import tracemalloc

import numpy as np

from metarep.bench.contenders._common import FIRST_ORDER

GB = 1e9


def task_data_bytes(n_tasks: int, m_in: int, m_out: int, d: int, itemsize: int = 8) -> int:
    """Bytes of X_in, y_in, X_out, y_out: N (m_in + m_out) (d + 1) numbers."""
    return int(n_tasks) * (int(m_in) + int(m_out)) * (int(d) + 1) * int(itemsize)


def measure_step_memory(method: str = FIRST_ORDER, *, n_tasks: int = 2000, m_in: int = 20, m_out: int = 10,
                        d: int = 50, width: int = 50, alpha: float = 0.1, seed: int = 0) -> dict:
    """Peak memory one outer step allocates beyond the task data, measured with tracemalloc.

    The step runs once first (compiling any kernel). "cold" is a step whose recycled kernel output
    buffers are allocated afresh (the first step of a run), "warm" a later step that reuses them.
    Returns the task-data bytes, both peaks, per task and in units of N (d + k') floats.
    """
    from metarep.bench.contenders.metarep_impl import _gradient_function
    from metarep.compute import kernels
    from metarep.families.tasks import Tasks
    from metarep.linear.params import Params

    gradient = _gradient_function(method)
    rng = np.random.default_rng(seed)
    tasks = Tasks(rng.standard_normal((n_tasks, m_in, d)), rng.standard_normal((n_tasks, m_in)),
                  rng.standard_normal((n_tasks, m_out, d)), rng.standard_normal((n_tasks, m_out)))
    params = Params(rng.standard_normal((d, width)) / np.sqrt(d), rng.standard_normal(width))

    def peak() -> int:
        gc.collect()
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            base, _ = tracemalloc.get_traced_memory()
            grads, _ = gradient(params, tasks, alpha=alpha)
            _, top = tracemalloc.get_traced_memory()
            del grads
        finally:
            tracemalloc.stop()
        return top - base

    gradient(params, tasks, alpha=alpha)
    kernels.clear_buffers()
    cold = peak()
    warm = peak()
    unit = n_tasks * (d + width) * 8
    return {"method": method, "n_tasks": n_tasks, "m_in": m_in, "m_out": m_out, "d": d, "width": width,
            "task_bytes": task_data_bytes(n_tasks, m_in, m_out, d),
            "working_bytes_cold": cold, "working_bytes_warm": warm,
            "working_per_task_cold": cold / n_tasks, "working_per_task_warm": warm / n_tasks,
            "working_in_N_d_plus_k": cold / unit, "backend": kernels.backend()}


def bytes_per_task(m: int, d: int, width: int, working_factor: float, itemsize: int = 8) -> float:
    """Task data m (d + 1) plus `working_factor` (d + k') numbers of working memory, in bytes."""
    return (m * (d + 1) + working_factor * (d + width)) * itemsize


def tasks_per_gb(m: int, d: int, width: int, working_factor: float, itemsize: int = 8) -> int:
    """The largest N whose task data and step working memory fit in 10^9 bytes."""
    return int(GB // bytes_per_task(m, d, width, working_factor, itemsize))
