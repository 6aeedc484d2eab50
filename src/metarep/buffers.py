"""Output arrays recycled between calls: a returned array that the caller has dropped (no
reference left anywhere) is reused by a later call with the same shape and dtype, which avoids
page-faulting fresh multi-megabyte arrays on every step. An array the caller still holds,
directly or through a view, is never reused. Used by the kernels (`metarep.kernels`) and the
population step."""

from __future__ import annotations

import sys
import threading

import numpy as np

__all__ = ["clear_buffers", "recycled_empty", "retain_freed_memory"]



class _BufferPool:
    """Recycles arrays that nobody references any more.

    A pooled array is handed out again only when the pool holds the sole reference to it
    (checked with the reference count, so views and other holders keep it alive and
    untouched). Only used on CPython, where reference counts are exact. The pool keeps at
    most `per_key` arrays of each shape and dtype, `max_keys` shapes, and `max_bytes` in all.
    """

    def __init__(self, per_key: int = 8, max_keys: int = 16, max_bytes: int = 512 << 20):
        gil = getattr(sys, "_is_gil_enabled", lambda: True)()
        self._enabled = sys.implementation.name == "cpython" and gil
        # the reference count of a pooled array that nothing else refers to, measured with
        # the very code that tests it (interpreters differ in the references they count)
        self._free_refs = self._first_free([np.empty(1)], None)[1]
        self._lock = threading.Lock()
        self._pool: dict[tuple, list[np.ndarray]] = {}
        self._per_key = per_key
        self._max_keys = max_keys
        self._max_bytes = max_bytes
        self._bytes = 0

    def empty(self, shape: tuple, dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        if not self._enabled:
            return np.empty(shape, dtype)
        key = (shape, dtype.str)
        with self._lock:
            bufs = self._pool.get(key)
            if bufs is not None:
                buf = self._first_free(bufs, self._free_refs)[0]
                if buf is not None:
                    return buf
            buf = np.empty(shape, dtype)
            if self._bytes + buf.nbytes > self._max_bytes:
                return buf
            if bufs is None:
                if len(self._pool) >= self._max_keys:        # forget the oldest shape
                    old = self._pool.pop(next(iter(self._pool)))
                    self._bytes -= sum(a.nbytes for a in old)
                bufs = self._pool[key] = []
            if len(bufs) < self._per_key:
                bufs.append(buf)
                self._bytes += buf.nbytes
            return buf

    @staticmethod
    def _first_free(bufs, free_refs):
        """The first array of `bufs` whose reference count is `free_refs` (with None: the
        count of the first array, for calibration)."""
        for buf in bufs:
            refs = sys.getrefcount(buf)
            if free_refs is None or refs == free_refs:
                return buf, refs
        return None, 0

    def clear(self) -> None:
        with self._lock:
            self._pool.clear()
            self._bytes = 0


_POOL = _BufferPool()


def recycled_empty(shape: tuple, dtype=np.float64) -> np.ndarray:
    """An uninitialised array, recycled from an earlier call when nothing else refers to it."""
    return _POOL.empty(tuple(shape), dtype)


def clear_buffers() -> None:
    """Release the recycled output arrays (they are reallocated on the next call)."""
    _POOL.clear()


def retain_freed_memory(threshold_bytes: int = 1 << 30) -> bool:
    """Opt-in, process-wide: ask glibc's allocator to keep freed memory instead of returning
    it to the system (raises M_MMAP_THRESHOLD and M_TRIM_THRESHOLD to `threshold_bytes`).

    The temporaries of a step (a few arrays of N x d) are then served from memory that is
    already mapped, instead of being page-faulted afresh every step, which on the measured
    machine cost several milliseconds per FO-ANIL step (docs/performance.md). The cost: the
    process keeps its peak heap. Equivalent to starting Python with the environment
    variables MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_ set. Never called by the
    library itself. Returns False where it does not apply (not glibc).
    """
    import ctypes
    import ctypes.util
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    value = int(min(max(threshold_bytes, 0), 2**31 - 1))
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    return bool(mallopt(M_MMAP_THRESHOLD, value)) and bool(mallopt(M_TRIM_THRESHOLD, value))
