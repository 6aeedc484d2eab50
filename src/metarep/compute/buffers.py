"""Memory of the kernels' outputs. Nothing is pooled behind the caller's back: a kernel returns
fresh arrays, or writes into arrays the caller owns and passes (`kernels.prediction_gradient`'s
``out=``). (An earlier pool handed an array out again when its reference count said that nobody
held it: an implementation detail of CPython that could overwrite a live array.) Freed arrays of
a step are cheap to allocate again through glibc's own reuse of freed memory, which
`retain_freed_memory` extends to every size."""

from __future__ import annotations

import sys

__all__ = ["clear_buffers", "retain_freed_memory"]


def clear_buffers() -> None:
    """Nothing to release: no output arrays are kept between calls (kept for callers that
    measure a first step: every step now allocates its outputs, or reuses the caller's)."""


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
