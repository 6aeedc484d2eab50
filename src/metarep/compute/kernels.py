"""Backends of the batched prediction-gradient kernel (see `linear.prediction_gradient`).

For every task n the kernel returns

    G[n]    = X_n^T (X_n theta_n - y_n) / m          (N, d)
    loss[n] = ||X_n theta_n - y_n||^2 / (2 m)          (N,)

Two backends compute it:

- ``numba``: one pass over the tasks. Each task's rows are read once: a row's residual and
  its contribution to G are formed while the row is in L1, so the whole call reads X once
  (the floor for this memory-bound kernel). Blocks of tasks are taken one at a time by
  `threads.count()` threads (`run_units`), or by the calling thread alone for calls too
  small to gain from threads. Every task is computed by one thread with the same code, so
  results do not depend on the number of threads.
- ``numpy``: a pure-NumPy fallback that walks the tasks in chunks small enough for their
  rows to stay in cache between the two products, so it too reads X from memory about once
  and never forms an (N, m, d) temporary.

The default backend is read once from the environment variable ``METAREP_KERNEL`` (``numba``
or ``numpy``); without it ``numba`` is used when it can be imported. A call chooses another
with ``backend=``, a block of code with ``with kernels.use("numpy"): ...`` (a context variable:
it applies to the calls made inside the block, in this thread, and ends with it).
`backend()` names the one in effect.

Outputs are fresh arrays, or arrays the caller owns and passes as ``out=(G, loss)`` (a loop
of steps that keeps its own pair writes into it again instead of allocating it every call).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
import sys
import threading
from collections.abc import Iterator

import numpy as np

from metarep.compute import threads
from metarep.compute.buffers import clear_buffers, retain_freed_memory

__all__ = ["available_backends", "backend", "clear_buffers", "default_backend", "numba_prediction_gradient",
           "numpy_prediction_gradient", "prediction_gradient", "prediction_gradient_reference",
           "retain_freed_memory", "use"]

ENV_VAR = "METAREP_KERNEL"
_BACKENDS = ("numba", "numpy")

# Tasks per chunk of the NumPy path: one chunk of X (chunk * m * d elements) is about 2 MiB,
# so its rows are still in cache for the second product, and the per-call overhead of
# the einsums stays small.
_CHUNK_BYTES = 2 << 20


# ----------------------------------------------------------------------------------------
# Argument handling shared by the backends
# ----------------------------------------------------------------------------------------

def prediction_gradient_reference(X, theta, y=None):
    """The plain NumPy form of `prediction_gradient`, the oracle the fast kernels are tested
    against (and the path of their edge cases: no tasks, no samples, integer data)."""
    m = X.shape[1]
    theta = np.asarray(theta)
    pred = X @ theta if theta.ndim == 1 else np.einsum("nmd,nd->nm", X, theta)
    resid = pred if y is None else pred - y
    G = np.einsum("nmd,nm->nd", X, resid) / m
    return G, 0.5 * np.einsum("nm,nm->n", resid, resid) / m


def _outputs(out, N: int, d: int, dt) -> tuple[np.ndarray, np.ndarray]:
    """G (N, d) and loss (N,) of dtype dt: fresh, or the caller's pair `out`, checked."""
    if out is None:
        return np.empty((N, d), dt), np.empty((N,), dt)
    G, loss = out
    for a, shape in ((G, (N, d)), (loss, (N,))):
        if not isinstance(a, np.ndarray) or a.shape != shape or a.dtype != dt or not a.flags.c_contiguous \
                or not a.flags.writeable:
            raise ValueError(f"out arrays must be writeable C-contiguous {dt} arrays of shapes {(N, d)} and {(N,)}")
    if np.shares_memory(G, loss):
        raise ValueError("out arrays G and loss must not overlap")
    return G, loss


def _into(out, G, loss):
    """(G, loss), copied into the caller's pair `out` when there is one."""
    if out is None:
        return G, loss
    G_out, loss_out = _outputs(out, G.shape[0], G.shape[1], G.dtype)
    np.copyto(G_out, G)
    np.copyto(loss_out, loss)
    return G_out, loss_out


def _arguments(X, theta, y):
    """X, theta, y as arrays, checked, and the output dtype: the part both backends share."""
    X = np.asarray(X)
    theta = np.asarray(theta)
    y = None if y is None else np.asarray(y)
    if X.ndim != 3:
        raise ValueError(f"X must have shape (N, m, d), got {X.shape}")
    N, m, d = X.shape
    if theta.shape not in ((d,), (N, d)):
        raise ValueError(f"theta must have shape ({d},) or ({N}, {d}), got {theta.shape}")
    if y is not None and y.shape != (N, m):
        raise ValueError(f"y must have shape ({N}, {m}), got {y.shape}")
    dt = np.result_type(X, theta) if y is None else np.result_type(X, theta, y)
    return X, theta, y, dt


# ----------------------------------------------------------------------------------------
# NumPy backend
# ----------------------------------------------------------------------------------------

def _chunk_size(m: int, d: int, itemsize: int) -> int:
    return max(1, _CHUNK_BYTES // max(1, m * d * itemsize))


_executor = None
_executor_pid = None
_executor_lock = threading.Lock()


def _pool_map(fn, items):
    """Run fn over items on `threads.count()` threads (NumPy's einsum releases the GIL)."""
    global _executor, _executor_pid
    workers = min(threads.count(), 8)
    if len(items) < 2 or workers < 2:
        for it in items:
            fn(it)
        return
    with _executor_lock:
        if _executor is None or _executor_pid != os.getpid():     # none yet, or a forked child
            from concurrent.futures import ThreadPoolExecutor
            _executor = ThreadPoolExecutor(8, thread_name_prefix="metarep-kernel")
            _executor_pid = os.getpid()
        executor = _executor
    shared = iter(items)       # each item is taken once, by whichever thread is free

    def drain():
        for item in shared:
            fn(item)

    helpers = [executor.submit(drain) for _ in range(workers - 1)]
    drain()
    for helper in helpers:
        helper.result()


def numpy_prediction_gradient(X, theta, y=None, *, chunk: int | None = None, threads: bool = False, out=None):
    """The NumPy backend: tasks in chunks of `chunk` (default: about 2 MiB of X each).

    With `threads`, chunks are spread over a few threads (einsum releases the GIL): faster
    for the kernel alone, but inside an FO-ANIL step, between multi-threaded BLAS products
    whose idle threads spin, it measured slower than one thread, so it is off by default.
    A task's result does not depend on the chunk size or the threads (chunks only group
    whole tasks). `out`: as in `prediction_gradient`."""
    X, theta, y, dt = _arguments(X, theta, y)
    N, m, d = X.shape
    if N == 0 or m == 0 or dt.kind != "f":
        return _into(out, *prediction_gradient_reference(X, theta, y))
    if chunk is None:
        chunk = _chunk_size(m, d, X.itemsize)
    chunk = max(1, int(chunk))
    G, sq = _outputs(out, N, d, dt)
    shared = theta.ndim == 1

    def run(s):
        e = min(s + chunk, N)
        Xc = X[s:e]
        r = np.empty((e - s, m), dt)          # the chunk's residuals
        if shared:
            np.einsum("nmd,d->nm", Xc, theta, out=r)
        else:
            np.einsum("nmd,nd->nm", Xc, theta[s:e], out=r)
        if y is not None:
            np.subtract(r, y[s:e], out=r)
        np.einsum("nmd,nm->nd", Xc, r, out=G[s:e])
        np.einsum("nm,nm->n", r, r, out=sq[s:e])

    starts = list(range(0, N, chunk))
    if threads:
        _pool_map(run, starts)
    else:
        for s in starts:
            run(s)
    G /= m
    sq *= 0.5
    sq /= m
    return G, sq


# ----------------------------------------------------------------------------------------
# Numba backend
# ----------------------------------------------------------------------------------------

# Below this many bytes of task data a compiled kernel runs on the calling thread alone: waking
# a helper costs more than it saves (measured with benchmarks/kernel_timing.py --threshold,
# docs/performance.md).
PARALLEL_MIN_BYTES = 1 << 20


@contextlib.contextmanager
def step_threads():
    """Within (a run's steps): BLAS on one thread when the numba backend is active, so that the
    small (N, d) x (d, k') products between kernel calls do not compete with the kernel's workers;
    with the NumPy backend, BLAS on no more threads than `threads.launch_count()` allows when the
    run starts (OpenBLAS threads spin while they wait: on a busy machine two of them are far
    slower than one). A no-op without threadpoolctl. Never changes results: the products are
    bit-identical across BLAS thread counts (tests/test_determinism.py)."""
    controller = _blas_controller()
    if controller is None:
        yield
        return
    limit = 1 if backend() == "numba" else threads.launch_count()
    with controller.limit(limits=limit, user_api="blas"):
        yield


def _blas_controller():
    """threadpoolctl's view of the loaded BLAS libraries, or None without threadpoolctl: inspected
    once (a fresh inspection per step would cost a large part of a step), and once more after
    SciPy's BLAS, which the compiled kernels' matrix products call, has been loaded."""
    return _inspected("scipy.linalg.cython_blas" in sys.modules)


@functools.lru_cache(maxsize=2)
def _inspected(scipy_blas_loaded: bool):
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    return ThreadpoolController()


@functools.lru_cache(maxsize=1)
def compiled_available() -> bool:
    """Whether the compiled kernels can run: numba, and SciPy, whose BLAS numba's matrix products
    call (looked up once, without importing either: the answer is asked every step)."""
    import importlib.util
    return all(importlib.util.find_spec(name) is not None for name in ("numba", "scipy"))


def _numba_importable() -> bool:
    """Whether numba is installed (found without importing it, which takes a while)."""
    import importlib.util
    try:
        return importlib.util.find_spec("numba") is not None
    except (ImportError, ValueError):
        return False


def numba_prediction_gradient(X, theta, y=None, *, out=None):
    """The numba backend: one pass over the tasks, reading X once. `out`: as in
    `prediction_gradient`."""
    X, theta, y, dt = _arguments(X, theta, y)
    N, m, d = X.shape
    if (N == 0 or m == 0 or X.dtype not in (np.float32, np.float64) or dt.kind != "f"
            or not X.flags.c_contiguous):
        # edge cases and strided views: the NumPy path handles them without a copy of X
        return numpy_prediction_gradient(X, theta, y, out=out)
    if not _numba_importable():
        raise ImportError("the numba kernel needs numba: pip install 'metarep[fast]'")
    from metarep.compute._compiled import gradient_units, prediction_gradient_units
    theta2 = np.ascontiguousarray(theta.reshape(-1, d), dtype=np.float64)
    if y is None:
        y_arr = np.empty((0, 0), X.dtype)
    elif y.dtype == X.dtype:
        y_arr = np.ascontiguousarray(y)
    else:
        y_arr = np.ascontiguousarray(y, dtype=np.float64)
    G, loss = _outputs(out, N, d, dt)
    threads.run_units(prediction_gradient_units, gradient_units(X), X.nbytes >= PARALLEL_MIN_BYTES,
              X, theta2, theta.ndim == 1, y_arr, y is not None, G, loss)
    return G, loss


# ----------------------------------------------------------------------------------------
# Choosing the backend
# ----------------------------------------------------------------------------------------

_selected: contextvars.ContextVar[str | None] = contextvars.ContextVar("metarep_kernel", default=None)


def _resolve(name: str | None) -> str:
    if name is None or name == "":
        return "numba" if _numba_importable() else "numpy"
    name = name.strip().lower()
    if name not in _BACKENDS:
        raise ValueError(f"{ENV_VAR} must be one of {_BACKENDS}, got {name!r}")
    if name == "numba" and not _numba_importable():
        raise ImportError(f"{ENV_VAR}=numba but numba is not installed: pip install 'metarep[fast]'")
    return name


def available_backends() -> tuple[str, ...]:
    """The backends that can run here."""
    return _BACKENDS if _numba_importable() else ("numpy",)


@functools.lru_cache(maxsize=1)
def default_backend() -> str:
    """The backend used where none is chosen: $METAREP_KERNEL, read once, or numba when installed."""
    return _resolve(os.environ.get(ENV_VAR))


def backend() -> str:
    """The backend in effect here: the innermost enclosing `use(...)`, else `default_backend()`."""
    return _selected.get() or default_backend()


@contextlib.contextmanager
def use(name: str | None) -> Iterator[str]:
    """Within: the kernels of this thread's calls run on backend `name` ('numba', 'numpy'; None:
    the default). Yields the backend's name."""
    token = _selected.set(default_backend() if name is None else _resolve(name))
    try:
        yield backend()
    finally:
        _selected.reset(token)


def chosen(name: str | None) -> str:
    """`name` checked, or the backend in effect when it is None."""
    return backend() if name is None else _resolve(name)


def prediction_gradient(X, theta, y=None, *, backend: str | None = None, out=None):
    """G (N, d) with G[n] = X_n^T (X_n theta_n - y_n) / m, and loss (N,) = ||.||^2 / (2m).

    X (N, m, d); theta (d,) shared or (N, d); y (N, m) or None (zeros). float32 inputs give
    float32 outputs (the numba backend accumulates in float64). `backend` overrides the one in
    effect (`use`) for this call. `out`: None (fresh arrays), or a pair (G, loss) of the right
    shapes and dtype that the caller owns: written and returned (its old contents are lost).
    """
    if chosen(backend) == "numba":
        return numba_prediction_gradient(X, theta, y, out=out)
    return numpy_prediction_gradient(X, theta, y, out=out)
