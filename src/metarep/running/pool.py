"""The one pool of worker processes (the sweeps, the reproductions and the studies), and jobs
whose results are kept so that a rerun resumes.

The workers are fresh processes ("spawn") that import metarep and not the caller's script, so a
plain script without `if __name__ == "__main__":` may start a pool (a job's function must then
live in a module, not in the script). Each worker gets its share of the CPUs for its kernels and
BLAS (`threads.init_worker`) and leaves Ctrl-C to this process, which asks the running jobs to
stop: a long job polls `stopping()`, checkpoints and returns. Results never depend on the number
of workers: each job is a pure function of its input, and results are handed back by index.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import multiprocessing.context
import shutil
import signal
import sys
import threading
import time
import types
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any, Protocol

from metarep.compute import threads
from metarep.storage.atomic import atomic_write

OnDone = Callable[[int, Any, float], None]
OnError = Callable[[int, BaseException], None]
STOP_GRACE_S = 10.0  # how long running jobs may take to stop after an interruption


def _never() -> bool:
    return False


_stop: Callable[[], bool] = _never   # in a worker: the pool's stop event; here: the caller's should_stop


def stopping() -> bool:
    """In a job: True once the pool was asked to stop (the job checkpoints and returns)."""
    return _stop()


# ----------------------------------------------------------------------------- processes

_BARE_MAIN = types.ModuleType("__main__")
_MAIN_LOCK = threading.Lock()


class _Process(multiprocessing.context.SpawnProcess):
    """A spawned process told nothing of this process's __main__: multiprocessing would have it
    run the caller's script again (as __mp_main__), which re-runs a script's top level and, in a
    script without the main guard, starts the pool again from the worker (BrokenProcessPool).
    The parent's __main__ is swapped for a bare module while the process is launched (its
    preparation data is read from it then); another thread looking at __main__ in that moment
    sees the bare module."""

    @staticmethod
    def _Popen(process_obj):
        with _MAIN_LOCK:
            main = sys.modules["__main__"]
            sys.modules["__main__"] = _BARE_MAIN
            try:
                return multiprocessing.context.SpawnProcess._Popen(process_obj)
            finally:
                sys.modules["__main__"] = main


class _Context(multiprocessing.context.SpawnContext):
    Process = _Process


def _init_worker(stop_event: Any, workers: int) -> None:
    global _stop
    threads.init_worker(workers)
    _stop = stop_event.is_set
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _timed(fn: Callable, job: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    result = fn(job)
    return result, time.perf_counter() - start


def _run_here(fn, jobs, order, on_done: OnDone, should_stop, on_error: OnError | None) -> bool:
    global _stop
    previous, _stop = _stop, should_stop
    try:
        for i in order:
            if should_stop():
                return True
            try:
                result, seconds = _timed(fn, jobs[i])
            except Exception as err:
                if on_error is None:
                    raise
                on_error(i, err)
                continue
            on_done(i, result, seconds)
        return should_stop()
    finally:
        _stop = previous


def _collect(done: set[Future], futures: dict[Future, int], on_done: OnDone, on_error: OnError | None) -> None:
    for future in sorted(done, key=futures.__getitem__):
        if future.cancelled():
            continue
        try:
            result, seconds = future.result()
        except Exception as err:  # the job's own error, or its worker killed by the OS
            if on_error is None:
                raise
            on_error(futures[future], err)
            continue
        on_done(futures[future], result, seconds)


def run_jobs(fn: Callable, jobs: Sequence, *, workers: int, on_done: OnDone, costs: Sequence[float] | None = None,
             should_stop: Callable[[], bool] = _never, on_error: OnError | None = None) -> bool:
    """fn(job) for every job, on `workers` worker processes (in this process for one).

    Jobs start in decreasing `costs` order (longest first balances the workers), else in their
    order; `on_done(index, result, seconds)` is called here as each finishes (those finishing
    together in index order). A job that raises, or whose worker dies, raises here, or goes to
    `on_error(index, error)` when given. Once `should_stop()` is True no job starts and the
    running ones see `stopping()`; returns True when stopped so.
    """
    if not jobs:
        return False
    order = sorted(range(len(jobs)), key=lambda i: -(costs[i] if costs is not None else 0.0))
    size = max(1, min(int(workers), len(jobs)))
    if size == 1:
        return _run_here(fn, jobs, order, on_done, should_stop, on_error)
    if getattr(fn, "__module__", None) == "__main__":
        raise ValueError(f"{fn.__qualname__} is defined in the script: the workers run functions of a module "
                         f"(move it to one, or use one worker)")
    ctx = _Context()
    stop = ctx.Event()
    stopped = False
    with ProcessPoolExecutor(size, mp_context=ctx, initializer=_init_worker, initargs=(stop, size)) as pool:
        futures = {pool.submit(_timed, fn, jobs[i]): i for i in order}
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                _collect(done, futures, on_done, on_error)
                if not stopped and should_stop():
                    stopped = True
                    stop.set()
                    for future in pending:
                        future.cancel()
        except BaseException:
            stop.set()
            for future in pending:
                future.cancel()
            _end(pool, pending)
            raise
    return stopped


def _end(pool: ProcessPoolExecutor, pending: set[Future]) -> None:
    """After an error or Ctrl-C here: the running jobs get STOP_GRACE_S seconds to see
    `stopping()` and return (a sweep's run checkpoints at its next step); the workers still busy
    then are ended (a job that does not poll, e.g. a reproduction's, is redone on the next call)."""
    try:
        wait(pending, timeout=STOP_GRACE_S)
    finally:
        for process in list(getattr(pool, "_processes", {}).values()):
            if process.is_alive():
                process.terminate()


def parallel_map(fn: Callable, jobs: Sequence, *, workers: int, costs: Sequence[float] | None = None,
                 on_done: OnDone | None = None) -> list:
    """[fn(job) for job in jobs] through `run_jobs`, results in the order of `jobs`."""
    results: list = [None] * len(jobs)

    def done(i: int, result: Any, seconds: float) -> None:
        results[i] = result
        if on_done:
            on_done(i, result, seconds)

    run_jobs(fn, jobs, workers=workers, costs=costs, on_done=done)
    return results


# ----------------------------------------------------------------------------- kept results


class Kept(Protocol):
    """Where a resumable list of jobs keeps the results of those done."""

    def get(self, index: int, job: Any) -> Any | None:
        """The kept result of job `index`, or None when it is still to do."""
        ...

    def put(self, index: int, job: Any, result: Any) -> None:
        """Keep the result of a job that has just finished (called in this process)."""
        ...


def kept_results(jobs: Sequence, kept: Kept) -> list:
    """The kept result of every job, None for those still to do."""
    return [kept.get(i, job) for i, job in enumerate(jobs)]


def run_missing(fn: Callable, jobs: Sequence, results: list, *, kept: Kept, workers: int,
                on_done: OnDone | None = None, costs: Sequence[float] | None = None,
                should_stop: Callable[[], bool] = _never, on_error: OnError | None = None,
                run: Callable[..., bool] = run_jobs) -> bool:
    """The jobs whose result is None in `results` (`kept_results`), on `run` (`run_jobs`, or a
    backend of the same signature), each result kept and put in `results` as it comes back;
    True when stopped early. Running it again after an interruption computes what is missing."""
    todo = [i for i, result in enumerate(results) if result is None]

    def done(j: int, result: Any, seconds: float) -> None:
        i = todo[j]
        kept.put(i, jobs[i], result)
        results[i] = result
        if on_done:
            on_done(i, result, seconds)

    failed = None if on_error is None else (lambda j, err: on_error(todo[j], err))
    return run(fn, [jobs[i] for i in todo], workers=workers, on_done=done, should_stop=should_stop,
               costs=None if costs is None else [costs[i] for i in todo], on_error=failed)


def job_key(job: Any) -> str:
    """A name for a job: the hash of its JSON text (configs, points and tags included)."""
    return hashlib.sha256(json.dumps(job, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _number(value):
    """numpy scalars as Python numbers (json's fallback)."""
    return value.item()


class KeptFolder:
    """Results as JSON files in a folder, one per job, named by `job_key` (results are JSON data)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def _path(self, job: Any) -> Path:
        return self.folder / f"{job_key(job)}.json"

    def get(self, index: int, job: Any) -> Any | None:
        path = self._path(job)
        return json.loads(path.read_text()) if path.exists() else None

    def put(self, index: int, job: Any, result: Any) -> None:
        atomic_write(self._path(job), json.dumps(result, default=_number).encode())


def resumable_map(fn: Callable, jobs: Sequence, *, workers: int, costs: Sequence[float], folder: str | Path,
                  on_done: OnDone | None = None) -> list:
    """parallel_map(fn, jobs) that reuses the results kept in `folder` (KeptFolder) and keeps
    each new one there as it finishes."""
    kept = KeptFolder(folder)
    results = kept_results(jobs, kept)
    run_missing(fn, jobs, results, kept=kept, workers=workers, costs=costs, on_done=on_done)
    return results


def finished(folder: str | Path) -> None:
    """The study wrote its outputs: drop the results kept in `folder`."""
    shutil.rmtree(folder, ignore_errors=True)
