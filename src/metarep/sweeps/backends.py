"""Where a sweep's runs execute: a local pool of processes (this process itself for one
worker), or Ray tasks.

A backend runs each task (a planned run and its prepared directory) with `run_one`, calls
`on_result(run, result)` in this process as each finishes, and returns True when it stopped
early because `should_stop()` said so. The workers only write their own run directories.

Every worker gets its share of the CPUs for its kernels and BLAS (metarep.threads): a local
pool of W processes gives each `threads.share(W)`; Ray reserves one CPU per task, so a task
gets one thread. Thread counts never change the numbers (tests/test_determinism.py).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from metarep import threads
from metarep.sweeps.grid import SweepError
from metarep.sweeps.plan import PlannedRun

Task = tuple[PlannedRun, Path]
OnResult = Callable[[PlannedRun, dict], None]
ShouldStop = Callable[[], bool]

_STOP: Any = None  # the pool's stop event, in a worker process


def _should_stop() -> bool:
    return _STOP is not None and _STOP.is_set()


def one_line(err: BaseException, limit: int = 400) -> str:
    text = " ".join(f"{type(err).__name__}: {err}".split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _failed(err: BaseException) -> dict[str, Any]:
    return {"status": "failed", "summary": None, "message": one_line(err), "wall_s": None}


def run_one(run_dir: str, figure: bool = True, should_stop: ShouldStop = _should_stop) -> dict[str, Any]:
    """Run (or continue, from its checkpoint) the experiment in `run_dir`, whose config.toml is written.

    Returns {"status", "summary", "message", "wall_s"}; an exception becomes status "failed".
    """
    start = time.perf_counter()
    try:
        from metarep.execute import execute_run

        result = execute_run(None, [], None, resume=Path(run_dir), figure=figure, should_stop=should_stop)
        out: dict[str, Any] = {"status": result.status, "summary": result.summary, "message": result.message}
    except Exception as err:  # noqa: BLE001 - any error of one run is recorded, the sweep goes on
        out = _failed(err)
    out["wall_s"] = time.perf_counter() - start
    return out


# ----------------------------------------------------------------------------- local processes


def _init_worker(stop_event: Any, workers: int) -> None:
    """A pool worker: its share of the CPUs, and Ctrl-C left to the parent, which asks the
    workers to stop through the event."""
    global _STOP
    threads.init_worker(workers)
    _STOP = stop_event
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _collect(done: set[Future], futures: dict[Future, PlannedRun], on_result: OnResult) -> None:
    """Hand each finished future's result to on_result, in grid order."""
    for future in sorted(done, key=lambda f: futures[f].index):
        if future.cancelled():
            continue
        try:
            result = future.result()
        except Exception as err:  # noqa: BLE001 - e.g. a worker killed by the OS
            result = _failed(err)
        on_result(futures[future], result)


def _run_here(tasks: list[Task], figures: bool, should_stop: ShouldStop, on_result: OnResult) -> bool:
    """The runs one after another in this process; True when stopped early (the run in
    progress checkpoints and stops at its next step)."""
    for run, run_dir in tasks:
        if should_stop():
            return True
        on_result(run, run_one(str(run_dir), figures, should_stop))
    return should_stop()


def run_local(tasks: list[Task], workers: int, figures: bool, should_stop: ShouldStop, on_result: OnResult) -> bool:
    """Run on a pool of `workers` fresh ("spawn") processes, or in this process for one worker
    (no process to start: a script needs no `if __name__ == "__main__"` guard then); True when
    stopped early."""
    if workers == 1:
        return _run_here(tasks, figures, should_stop, on_result)
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    size = max(1, min(workers, len(tasks)))
    stopped = False
    with ProcessPoolExecutor(max_workers=size, mp_context=ctx, initializer=_init_worker,
                             initargs=(stop, size)) as pool:
        futures = {pool.submit(run_one, str(run_dir), figures): run for run, run_dir in tasks}
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                _collect(done, futures, on_result)
                if not stopped and should_stop():
                    stopped = True
                    stop.set()
                    for future in pending:
                        future.cancel()
        except BaseException:
            stop.set()
            for future in pending:
                future.cancel()
            raise
    return stopped


# ----------------------------------------------------------------------------- Ray


def import_ray() -> Any:
    """The ray module, or a one-line SweepError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise SweepError("--backend ray needs Ray: install metarep[ray] (pip install 'metarep[ray]')") from None
    return ray


def _ray_task(run_dir: str, figure: bool) -> dict[str, Any]:
    """run_one in a Ray worker, which Ray gives one CPU: one thread for its kernels and BLAS."""
    threads.init_worker(threads.available())
    return run_one(run_dir, figure)


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


def run_ray(tasks: list[Task], workers: int, figures: bool, should_stop: ShouldStop, on_result: OnResult) -> bool:
    """Run as Ray tasks: on the cluster at $RAY_ADDRESS, else on a local Ray started for the sweep
    with `workers` CPUs (shut down at the end). True when stopped early."""
    ray = import_ray()
    started = _start_ray(ray, workers)
    try:
        remote = ray.remote(num_cpus=1, max_retries=0)(_ray_task)
        refs = {remote.remote(str(run_dir), figures): run for run, run_dir in tasks}
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=0.2)
            for ref in ready:
                try:
                    result = ray.get(ref)
                except Exception as err:  # noqa: BLE001 - a task or worker that died
                    result = _failed(err)
                on_result(refs[ref], result)
            if pending and should_stop():
                for ref in pending:
                    ray.cancel(ref, force=True)
                return True
    finally:
        if started:
            ray.shutdown()
    return False


BACKENDS: dict[str, Callable[[list[Task], int, bool, ShouldStop, OnResult], bool]] = {
    "local": run_local, "ray": run_ray}
