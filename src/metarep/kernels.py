"""Backends of the batched prediction-gradient kernel (see `linear.prediction_gradient`).

For every task n the kernel returns

    G[n]    = X_n^T (X_n theta_n - y_n) / m          (N, d)
    loss[n] = ||X_n theta_n - y_n||^2 / (2 m)          (N,)

Two backends compute it:

- ``numba``: one parallel pass over the tasks (``prange``). Each task's rows are read once:
  a row's residual and its contribution to G are formed while the row is in L1, so the whole
  call reads X once (the floor for this memory-bound kernel). Every task is computed by one
  thread with the same code, so results do not depend on the number of threads.
- ``numpy``: a pure-NumPy fallback that walks the tasks in chunks small enough for their
  rows to stay in cache between the two products, so it too reads X from memory about once
  and never forms an (N, m, d) temporary.

The backend is chosen by the environment variable ``METAREP_KERNEL`` (``numba`` or
``numpy``); without it ``numba`` is used when it can be imported. `backend()` names the
active one and `set_backend()` switches at run time.

Output arrays are recycled: a returned G or loss that the caller has dropped (no reference
left anywhere) is reused by a later call with the same shape and dtype, which avoids
page-faulting fresh multi-megabyte arrays on every step. An array the caller still holds,
directly or through a view, is never reused.
"""

from __future__ import annotations

import os
import sys
import threading

import numpy as np

__all__ = ["prediction_gradient", "backend", "set_backend", "available_backends",
           "numpy_prediction_gradient", "numba_prediction_gradient", "clear_buffers"]

ENV_VAR = "METAREP_KERNEL"
_BACKENDS = ("numba", "numpy")

# Tasks per chunk of the NumPy path: chosen so one chunk of X (chunk * m * d elements)
# is about 128 KiB and stays in L2 between the two products.
_CHUNK_BYTES = 1 << 17


# ----------------------------------------------------------------------------------------
# Output buffers
# ----------------------------------------------------------------------------------------

class _BufferPool:
    """Recycles output arrays that nobody references any more.

    A pooled array is handed out again only when the pool holds the sole reference to it
    (checked with the reference count, so views and other holders keep it alive and
    untouched). Only used on CPython, where reference counts are exact.
    """

    _enabled = sys.implementation.name == "cpython"

    def __init__(self, per_key: int = 4, max_keys: int = 8):
        self._lock = threading.Lock()
        self._pool: dict[tuple, list[np.ndarray]] = {}
        self._per_key = per_key
        self._max_keys = max_keys

    def empty(self, shape: tuple, dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        if not self._enabled:
            return np.empty(shape, dtype)
        key = (shape, dtype.str)
        with self._lock:
            bufs = self._pool.get(key)
            if bufs is None:
                if len(self._pool) >= self._max_keys:        # forget the oldest shape
                    self._pool.pop(next(iter(self._pool)))
                bufs = self._pool[key] = []
            for buf in bufs:
                # references: the list, `buf`, and getrefcount's argument
                if sys.getrefcount(buf) == 3:
                    return buf
            buf = np.empty(shape, dtype)
            if len(bufs) < self._per_key:
                bufs.append(buf)
            return buf

    def clear(self) -> None:
        with self._lock:
            self._pool.clear()


_POOL = _BufferPool()


def clear_buffers() -> None:
    """Release the recycled output arrays (they are reallocated on the next call)."""
    _POOL.clear()


# ----------------------------------------------------------------------------------------
# Argument handling shared by the backends
# ----------------------------------------------------------------------------------------

def _check(X, theta, y):
    if X.ndim != 3:
        raise ValueError(f"X must have shape (N, m, d), got {X.shape}")
    N, m, d = X.shape
    if theta.shape not in ((d,), (N, d)):
        raise ValueError(f"theta must have shape ({d},) or ({N}, {d}), got {theta.shape}")
    if y is not None and y.shape != (N, m):
        raise ValueError(f"y must have shape ({N}, {m}), got {y.shape}")


def _out_dtype(X, theta, y) -> np.dtype:
    return np.result_type(X, theta) if y is None else np.result_type(X, theta, y)


# ----------------------------------------------------------------------------------------
# NumPy backend
# ----------------------------------------------------------------------------------------

def _chunk_size(m: int, d: int, itemsize: int) -> int:
    return max(1, _CHUNK_BYTES // max(1, m * d * itemsize))


def numpy_prediction_gradient(X, theta, y=None, *, chunk: int | None = None):
    """The NumPy backend: tasks in chunks of `chunk` (default: about 128 KiB of X each)."""
    X = np.asarray(X)
    theta = np.asarray(theta)
    y = None if y is None else np.asarray(y)
    _check(X, theta, y)
    N, m, d = X.shape
    dt = _out_dtype(X, theta, y)
    if N == 0 or m == 0 or dt.kind not in "fc" or np.iscomplexobj(X):
        from metarep.linear import prediction_gradient_reference
        return prediction_gradient_reference(X, theta, y)
    if chunk is None:
        chunk = _chunk_size(m, d, X.itemsize)
    chunk = max(1, int(chunk))
    G = _POOL.empty((N, d), dt)
    sq = _POOL.empty((N,), dt)
    shared = theta.ndim == 1
    if shared:
        theta = theta.astype(dt, copy=False)
    c0 = min(chunk, N)
    resid_buf = np.empty((c0, m), dt)
    for s in range(0, N, chunk):
        e = min(s + chunk, N)
        Xc = X[s:e]
        r = resid_buf[: e - s]
        if shared:
            np.matmul(Xc, theta, out=r)
        else:
            np.matmul(Xc, theta[s:e, :, None], out=r[:, :, None])
        if y is not None:
            np.subtract(r, y[s:e], out=r)
        np.matmul(r[:, None, :], Xc, out=G[s:e, None, :])
        np.einsum("nm,nm->n", r, r, out=sq[s:e])
    G /= m
    sq *= 0.5
    sq /= m
    return G, sq


# ----------------------------------------------------------------------------------------
# Numba backend
# ----------------------------------------------------------------------------------------

_numba_kernel = None
_numba_error: Exception | None = None

# Reassociation (and fused multiply-add) only: lets the dot products vectorise, and keeps
# NaN and inf semantics so a diverging run is still detected.
_FASTMATH = {"reassoc", "contract"}

# Tasks per parallel block; one scratch row is allocated per block. Fixed, so the work
# done for a task never depends on the number of threads.
_BLOCK = 64


def _build_numba_kernel():
    import numba
    from numba import prange

    @numba.njit(parallel=True, cache=True, fastmath=_FASTMATH, error_model="numpy",
                nogil=True, boundscheck=False)
    def kernel(X, theta, shared, y, has_y, G, loss):  # pragma: no cover - compiled
        N, m, d = X.shape
        nblocks = (N + _BLOCK - 1) // _BLOCK
        for b in prange(nblocks):
            acc = np.empty(d, dtype=np.float64)
            th = np.empty(d, dtype=np.float64)
            start = b * _BLOCK
            stop = min(start + _BLOCK, N)
            for n in range(start, stop):
                t = 0 if shared else n
                for j in range(d):
                    th[j] = theta[t, j]
                    acc[j] = 0.0
                s = 0.0
                for i in range(m):
                    r = 0.0
                    for j in range(d):
                        r += X[n, i, j] * th[j]
                    if has_y:
                        r -= y[n, i]
                    s += r * r
                    for j in range(d):
                        acc[j] += r * X[n, i, j]
                for j in range(d):
                    G[n, j] = acc[j] / m
                loss[n] = 0.5 * s / m

    return kernel


def _get_numba_kernel():
    global _numba_kernel, _numba_error
    if _numba_kernel is None and _numba_error is None:
        try:
            _numba_kernel = _build_numba_kernel()
        except ImportError as exc:
            _numba_error = exc
    if _numba_kernel is None:
        raise ImportError("the numba kernel needs numba: pip install 'metarep[fast]'") from _numba_error
    return _numba_kernel


def _numba_importable() -> bool:
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def numba_prediction_gradient(X, theta, y=None):
    """The numba backend: one parallel pass over the tasks, reading X once."""
    X = np.asarray(X)
    theta = np.asarray(theta)
    y = None if y is None else np.asarray(y)
    _check(X, theta, y)
    N, m, d = X.shape
    dt = _out_dtype(X, theta, y)
    if (N == 0 or m == 0 or X.dtype not in (np.float32, np.float64) or dt.kind != "f"
            or not X.flags.c_contiguous):
        # edge cases and strided views: the NumPy path handles them without a copy of X
        return numpy_prediction_gradient(X, theta, y)
    kernel = _get_numba_kernel()
    theta2 = np.ascontiguousarray(theta.reshape(-1, d), dtype=np.float64)
    if y is None:
        y_arr = np.empty((0, 0), X.dtype)
    elif y.dtype == X.dtype:
        y_arr = np.ascontiguousarray(y)
    else:
        y_arr = np.ascontiguousarray(y, dtype=np.float64)
    G = _POOL.empty((N, d), dt)
    loss = _POOL.empty((N,), dt)
    kernel(X, theta2, theta.ndim == 1, y_arr, y is not None, G, loss)
    return G, loss


# ----------------------------------------------------------------------------------------
# Dispatch
# ----------------------------------------------------------------------------------------

_active: str | None = None


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


def backend() -> str:
    """Name of the active backend: 'numba' or 'numpy'."""
    global _active
    if _active is None:
        _active = _resolve(os.environ.get(ENV_VAR))
    return _active


def set_backend(name: str | None) -> str:
    """Switch the backend ('numba', 'numpy', or None for the default); returns the previous one."""
    global _active
    previous = backend()
    _active = _resolve(name)
    return previous


def prediction_gradient(X, theta, y=None):
    """G (N, d) with G[n] = X_n^T (X_n theta_n - y_n) / m, and loss (N,) = ||.||^2 / (2m).

    X (N, m, d); theta (d,) shared or (N, d); y (N, m) or None (zeros). float32 inputs give
    float32 outputs (the numba backend accumulates in float64).
    """
    if backend() == "numba":
        return numba_prediction_gradient(X, theta, y)
    return numpy_prediction_gradient(X, theta, y)
