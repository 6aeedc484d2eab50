"""Shared helpers for the contender implementations."""

from __future__ import annotations

import numpy as np

from metarep.methods.anil import METHOD as _EXACT
from metarep.methods.fo_anil import METHOD as _FIRST_ORDER

#: the outer steps every contender implements, by their registered names: FO-ANIL, exact ANIL
FIRST_ORDER, EXACT = _FIRST_ORDER.name, _EXACT.name
METHODS = (FIRST_ORDER, EXACT)


def check_method(method: str) -> bool:
    """Validate ``method`` and return True for the first-order variant."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    return method == FIRST_ORDER


def as_dtype(dtype) -> np.dtype:
    """Normalise a dtype spec (``np.float64``, ``"float32"``, ...) to float32/float64."""
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be float32 or float64, got {dt}")
    return dt


def check_shapes(X_in, y_in, X_out, y_out) -> tuple[int, int, int, int]:
    """Check the task-data shapes and return ``(N, m_in, m_out, d)``."""
    X_in, y_in, X_out, y_out = (np.asarray(a) for a in (X_in, y_in, X_out, y_out))
    if X_in.ndim != 3 or X_out.ndim != 3:
        raise ValueError("X_in and X_out must have shape (N, m, d)")
    N, m_in, d = X_in.shape
    if X_out.shape[0] != N or X_out.shape[2] != d:
        raise ValueError("X_out must have shape (N, m_out, d) matching X_in")
    m_out = X_out.shape[1]
    if y_in.shape != (N, m_in) or y_out.shape != (N, m_out):
        raise ValueError("y_in / y_out must have shapes (N, m_in) / (N, m_out)")
    return N, m_in, m_out, d


def prepare_arrays(X_in, y_in, X_out, y_out, method, dtype):
    """Validate a contender's inputs once: (first_order, dtype, (N, m_in, m_out, d), the four
    arrays as contiguous NumPy arrays of that dtype)."""
    first_order = check_method(method)
    dt = as_dtype(dtype)
    shape = check_shapes(X_in, y_in, X_out, y_out)
    arrays = tuple(np.ascontiguousarray(a, dtype=dt) for a in (X_in, y_in, X_out, y_out))
    return first_order, dt, shape, arrays


def missing(package: str, contender: str, hint: str) -> ImportError:
    """Build the ImportError raised when a contender's framework is absent."""
    return ImportError(
        f"contender {contender!r} needs the {package!r} package, which is not "
        f"installed ({hint}); skip this contender or install it."
    )
