"""Where a sweep's runs execute: a local pool of processes (this process itself for one
worker), or Ray tasks.

A backend has the signature of `metarep.running.pool.run_jobs` (the local one is it): it runs a job
function on each job, calls `on_done(index, result, seconds)` in this process as each finishes,
and returns True when it stopped early because `should_stop()` said so. A sweep's job is
`run_task((run_dir, figure))`; the workers only write their own run directories.

Every worker gets its share of the CPUs for its kernels and BLAS (metarep.compute.threads): a local
pool of W processes gives each `threads.share(W)`; Ray reserves one CPU per task, so a task
gets one thread. Thread counts never change the numbers (tests/test_determinism.py).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from metarep.compute import threads
from metarep.running import pool
from metarep.sweeps.grid import SweepError

Backend = Callable[..., bool]  # pool.run_jobs's signature


def one_line(err: BaseException, limit: int = 400) -> str:
    text = " ".join(f"{type(err).__name__}: {err}".split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def failed(err: BaseException) -> dict[str, Any]:
    return {"status": "failed", "summary": None, "message": one_line(err), "wall_s": None}


def run_one(run_dir: str, figure: bool = True, should_stop: Callable[[], bool] = pool.stopping) -> dict[str, Any]:
    """Run (or continue, from its checkpoint) the experiment in `run_dir`, whose config.toml is written.

    Returns {"status", "summary", "message", "wall_s"}; an exception becomes status "failed".
    """
    start = time.perf_counter()
    try:
        from metarep.running.execute import execute_run

        result = execute_run(None, [], None, resume=Path(run_dir), figure=figure, should_stop=should_stop)
        out: dict[str, Any] = {"status": result.status, "summary": result.summary, "message": result.message}
    except Exception as err:  # noqa: BLE001 - any error of one run is recorded, the sweep goes on
        out = failed(err)
    out["wall_s"] = time.perf_counter() - start
    return out


def run_task(task: tuple[str, bool]) -> dict[str, Any]:
    """A sweep's job: run_one(run_dir, figure), stopping when the pool stops."""
    return run_one(*task)


# ----------------------------------------------------------------------------- Ray


def import_ray() -> Any:
    """The ray module, or a one-line SweepError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise SweepError("--backend ray needs Ray: install metarep[ray] (pip install 'metarep[ray]')") from None
    return ray


def _ray_task(fn: Callable, job: Any) -> tuple[Any, float]:
    """fn(job) in a Ray worker, which Ray gives one CPU: one thread for its kernels and BLAS."""
    threads.init_worker(threads.available())
    start = time.perf_counter()
    return fn(job), time.perf_counter() - start


def _start_ray(ray: Any, workers: int) -> bool:
    """Connect to $RAY_ADDRESS, or start a local Ray with `workers` CPUs; True when started here."""
    if ray.is_initialized():
        return False
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, configure_logging=False)
    else:
        ray.init(num_cpus=workers, include_dashboard=False, configure_logging=False)
    return True


def run_ray(fn: Callable, jobs: Sequence, *, workers: int, on_done: pool.OnDone,
            costs: Sequence[float] | None = None, should_stop: Callable[[], bool] = lambda: False,
            on_error: pool.OnError | None = None) -> bool:
    """pool.run_jobs as Ray tasks: on the cluster at $RAY_ADDRESS, else on a local Ray started
    for the sweep with `workers` CPUs (shut down at the end). True when stopped early."""
    ray = import_ray()
    started = _start_ray(ray, workers)
    order = sorted(range(len(jobs)), key=lambda i: -(costs[i] if costs is not None else 0.0))
    try:
        remote = ray.remote(num_cpus=1, max_retries=0)(_ray_task)
        refs = {remote.remote(fn, jobs[i]): i for i in order}
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=0.2)
            for ref in ready:
                try:
                    result, seconds = ray.get(ref)
                except Exception as err:  # a task or worker that died
                    if on_error is None:
                        raise
                    on_error(refs[ref], err)
                    continue
                on_done(refs[ref], result, seconds)
            if pending and should_stop():
                for ref in pending:
                    ray.cancel(ref, force=True)
                return True
    finally:
        if started:
            ray.shutdown()
    return False


BACKENDS: dict[str, Backend] = {"local": pool.run_jobs, "ray": run_ray}
