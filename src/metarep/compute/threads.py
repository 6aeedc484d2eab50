"""How many threads this process's parallel work may use, decided in one place.

The count is the smallest of

- the CPUs this process may run on (its affinity mask) and its cgroup CPU quota
  (``cpu.max`` in cgroup v2, ``cpu.cfs_quota_us / cpu.cfs_period_us`` in v1), rounded up,
  or ``$METAREP_THREADS`` when set (the user's explicit choice);
- its share of a process pool: a worker of a pool of W processes gets ``available() // W``
  (at least one), set once in the worker by `init_worker`, the pools' initializer;
- a scoped limit, ``with threads.limited(n): ...`` (a context variable: it applies to the
  calls made inside the block, in this thread, and is undone on leaving it).

A kernel launch (`run_units`) takes `launch_count()`: `count()`, and fewer while
other work keeps the machine's CPUs busy (never more threads than CPUs free right now: the
runnable tasks of /proc/loadavg less this process's own), so that a thread never waits for a
core; an explicit ``$METAREP_THREADS`` is used as it is. The threads are numba's pool when every
CPU is free, else helper threads that sleep when idle. In a pool worker the matrix products'
BLAS threads are capped by `init_worker` through threadpoolctl, and torch's pool by its own
setting. Results never depend on the
count (the kernels sum in a fixed order, tests/test_determinism.py).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib.util
import math
import os
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

__all__ = ["available", "cap_blas", "count", "free_cpus", "init_worker", "launch_count", "limited", "run_units",
           "share"]

ENV_VAR = "METAREP_THREADS"
_CGROUP = Path("/sys/fs/cgroup")

_scoped: contextvars.ContextVar[int | None] = contextvars.ContextVar("metarep_threads", default=None)
_worker_share: int | None = None      # set by init_worker in a pool's worker process


def _affinity() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _cgroup_dirs() -> list[tuple[str, Path]]:
    """(version, directory) of this process's cgroups that may hold a CPU quota, innermost
    first, ancestors after (a parent's quota limits its children too)."""
    dirs: list[tuple[str, Path]] = []
    for line in (_read(Path("/proc/self/cgroup")) or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hier, controllers, rel = parts
        if hier == "0":
            unified = _CGROUP / "unified"
            root, version = (unified if unified.is_dir() else _CGROUP), "v2"
        elif "cpu" in controllers.split(","):
            root, version = _CGROUP / "cpu", "v1"
        else:
            continue
        rel_path = Path(rel.lstrip("/"))
        for sub in (rel_path, *rel_path.parents):
            dirs.append((version, root / sub))
    return dirs


def _quota(version: str, where: Path) -> float | None:
    """CPUs allowed by one cgroup directory's quota, or None (no quota, or none readable)."""
    if version == "v2":
        text = _read(where / "cpu.max")
        if text is None or text.split()[0] == "max":
            return None
        quota, period = text.split()[:2]
        return int(quota) / max(1, int(period))
    cfs_quota, cfs_period = _read(where / "cpu.cfs_quota_us"), _read(where / "cpu.cfs_period_us")
    if cfs_quota is None or cfs_period is None or int(cfs_quota) <= 0:
        return None
    return int(cfs_quota) / max(1, int(cfs_period))


def cgroup_cpus() -> float | None:
    """The tightest CPU quota of this process's cgroups (in CPUs, may be fractional), or None."""
    quotas = []
    for version, where in _cgroup_dirs():
        try:
            q = _quota(version, where)
        except ValueError:
            q = None
        if q is not None:
            quotas.append(q)
    return min(quotas) if quotas else None


@functools.lru_cache(maxsize=1)
def available() -> int:
    """CPUs this process may use: its affinity mask, capped by its cgroup CPU quota (rounded up);
    or $METAREP_THREADS when set. Looked up once (`available.cache_clear()` looks again)."""
    chosen = os.environ.get(ENV_VAR, "").strip()
    if chosen:
        try:
            return max(1, int(chosen))
        except ValueError:
            raise ValueError(f"{ENV_VAR} must be a whole number of threads, got {chosen!r}") from None
    n = _affinity()
    quota = cgroup_cpus()
    if quota is not None:
        n = min(n, max(1, math.ceil(quota)))
    return max(1, n)


def share(workers: int) -> int:
    """Threads for each of `workers` processes sharing this machine's CPUs (at least one)."""
    return max(1, available() // max(1, int(workers)))


def count() -> int:
    """Threads the parallel work of this call may use: `available()`, capped by this process's
    pool share (`init_worker`) and by an enclosing `limited(n)`."""
    n = available() if _worker_share is None else _worker_share
    scoped = _scoped.get()
    if scoped is not None:
        n = min(n, scoped)
    return max(1, n)


#: how often launch_count looks at the machine's other work, in seconds
BUSY_INTERVAL = 0.05
_seen = [-1.0, 1]          # when free_cpus last looked, and what it saw


def _runnable() -> int | None:
    """Tasks runnable on the whole machine right now, this one included (/proc/loadavg)."""
    text = _read(Path("/proc/loadavg"))
    try:
        return int(text.split()[3].split("/")[0]) if text else None
    except (IndexError, ValueError):
        return None


def _own_runnable() -> int | None:
    """This process's threads that are running or waiting for a CPU (/proc/self/task/*/stat,
    state R): the caller, and kernel threads still busy or waiting on their core after a launch."""
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return None
    n = 0
    for task in tasks:
        try:
            with open(f"/proc/self/task/{task}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        n += stat[stat.rindex(b")") + 2:].startswith(b"R")
    return n


def free_cpus() -> int:
    """The machine's CPUs that other work does not use right now: all of them less the runnable
    tasks of other processes (/proc/loadavg less this process's own), at least one; all of
    them where that is not known. Looked at no more often than every BUSY_INTERVAL seconds."""
    now = time.monotonic()
    if now - _seen[0] >= BUSY_INTERVAL:
        cpus = os.cpu_count() or 1
        runnable = _runnable()
        ours = max(1, _own_runnable() or 1)
        _seen[:] = [now, cpus if runnable is None else max(1, min(cpus, cpus - (runnable - ours)))]
    return int(_seen[1])


def launch_count() -> int:
    """Threads for the kernel launch about to start: `count()`, but no more than `free_cpus()`,
    since a helper without a core of its own holds back the caller that waits for its unit;
    $METAREP_THREADS, the user's explicit choice, is used as it is."""
    n = count()
    if n == 1 or os.environ.get(ENV_VAR, "").strip():
        return n
    return min(n, free_cpus())


@contextlib.contextmanager
def limited(n: int) -> Iterator[int]:
    """Within: the parallel kernels use at most `n` threads (in this thread's calls)."""
    token = _scoped.set(max(1, int(n)))
    try:
        yield count()
    finally:
        _scoped.reset(token)


def init_worker(workers: int) -> None:
    """A process pool's initializer (runs in each worker): this process gets `share(workers)`
    threads for its kernels and its BLAS, so W workers together never use more threads than
    the CPUs they may run on. Works after NumPy (hence BLAS) has been imported: BLAS is
    capped at run time through threadpoolctl, the kernels read `count()` at every launch."""
    global _worker_share
    _worker_share = share(workers)
    cap_blas(_worker_share)
    _cap_torch(_worker_share)


def _cap_torch(n: int) -> None:
    """torch's own CPU pool to `n` threads in this process: through its setting when torch is
    loaded, else through the variables it reads when it loads. (threadpoolctl caps it only inside
    a step, `nonlinear.backend.step_threads`; outside, each worker's torch kept a thread per core,
    and two workers' pools spun on each other's cores: a 300-step burer-monteiro run took 6.6 s
    instead of 2.9 s with two workers busy.)"""
    import sys

    n = max(1, int(n))
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    else:
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(n)


def cap_blas(n: int) -> None:
    """Cap the BLAS and OpenMP libraries at `n` threads for the rest of this process
    (threadpoolctl; nothing happens without it). SciPy's BLAS, which the compiled kernels call,
    is loaded first so that it is capped too."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    if importlib.util.find_spec("scipy") is not None:
        import scipy.linalg  # noqa: F401  (loads SciPy's BLAS)
    threadpool_limits(limits=max(1, int(n)))


# ----------------------------------------------------------------------------------------
# Running a kernel on several threads
# ----------------------------------------------------------------------------------------

class _Helpers:
    """Threads that run kernels beside the caller. Idle ones sleep on a queue (no spinning),
    so they cost nothing while this process, or any other, needs the cores."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue | None = None
        self._started = 0
        self._pid: int | None = None

    def submit(self, fn, count: int) -> None:
        """Run `fn()` on `count` helpers, starting more threads when fewer are idle."""
        with self._lock:
            if self._queue is None or self._pid != os.getpid():     # none yet, or a forked child
                self._queue, self._started, self._pid = queue.SimpleQueue(), 0, os.getpid()
            while self._started < count:
                threading.Thread(target=self._serve, args=(self._queue,), daemon=True,
                                 name=f"metarep-kernel-{self._started}").start()
                self._started += 1
            jobs = self._queue
        for _ in range(count):
            jobs.put(fn)

    @staticmethod
    def _serve(jobs: queue.SimpleQueue) -> None:
        while True:
            jobs.get()()


_helpers = _Helpers()


def _pool_form(kernel):
    """The kernel's launch on numba's own thread pool (`metarep.compute._compiled.ON_POOL`), or None."""
    try:
        from metarep.compute._compiled import ON_POOL
    except ImportError:
        return None
    return ON_POOL.get(kernel)


def run_units(kernel, units: int, parallel: bool, *args) -> None:
    """Run a unit kernel of `metarep.compute._compiled` (it takes units of work from a shared counter
    until none is left) on `args`: on `launch_count()` threads when `parallel` (the caller's
    measured threshold, e.g. PARALLEL_MIN_BYTES), else on the calling thread alone.

    Where every CPU this process may use is free, the threads are numba's own pool: its threads
    wait on their core for a moment after a launch, so that launches in quick succession (the
    steps of a run) find them running. Otherwise they are the caller and helper threads that
    sleep when idle, so that they never take a core from other work: the caller never waits for
    a helper that has not started (it finds no unit left when it does), only for units a helper
    has taken and not yet finished. (Measured on the idle 2-core machine: a batch of 64
    population runs after a pause took 0.62-0.84 ms a step on numba's pool, 0.82-1.22 ms on
    sleeping helpers.) Either way the units and the order of every sum are the same."""
    workers = min(launch_count(), units) if parallel else 1
    counter = np.zeros(2, np.int64)
    if workers <= 1:
        kernel(*args, counter)
        return
    on_pool = _pool_form(kernel) if free_cpus() >= available() else None
    if on_pool is not None:
        on_pool(workers, *args, counter)
        return
    done = threading.Event()
    failed: list[BaseException] = []

    def helper():
        try:
            if kernel(*args, counter):
                done.set()
        except BaseException as exc:   # surfaced in the caller, which would wait forever
            failed.append(exc)
            done.set()

    _helpers.submit(helper, workers - 1)
    if not kernel(*args, counter):
        done.wait()
    if failed:
        raise failed[0]
