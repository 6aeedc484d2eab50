"""Contenders for one meta-gradient step of FO-ANIL / exact ANIL.

Every contender is a factory with the same signature::

    make_<name>(X_in, y_in, X_out, y_out, alpha, method, dtype) -> step
    step(B, w) -> (grad_B, grad_w, loss)        # NumPy arrays

``X_in`` (N, m_in, d), ``y_in`` (N, m_in), ``X_out`` (N, m_out, d),
``y_out`` (N, m_out) are NumPy arrays, ``method`` is ``"fo-anil"`` or
``"anil"`` and ``dtype`` is float32 or float64.  The factory converts or
uploads the data once, so that ``step`` times only the meta-gradient.
``loss`` is the outer (meta) loss ``(1/N) sum_i L(B, w_i; X_out_i, y_out_i)``.

Factories of optional frameworks (torch, higher, jax) import them lazily and
raise ``ImportError`` with a clear message when the package is missing.
"""

from __future__ import annotations

from .higher_impl import make_higher_loop
from .jax_impl import make_jax_jit_vmap
from .numpy_impl import make_numpy_batched, make_numpy_loop
from .torch_impl import make_torch_func, make_torch_loop

#: name -> factory, in order from simplest to most elaborate
CONTENDERS = {
    "numpy_loop": make_numpy_loop,
    "numpy_batched": make_numpy_batched,
    "torch_loop": make_torch_loop,
    "higher_loop": make_higher_loop,
    "torch_func": make_torch_func,
    "jax_jit_vmap": make_jax_jit_vmap,
}

#: contenders that loop over tasks in Python (slow at large N)
LOOP_CONTENDERS = ("numpy_loop", "torch_loop", "higher_loop")


def make_contender(name, X_in, y_in, X_out, y_out, alpha, method, dtype):
    """Build contender ``name``; raises KeyError if unknown, ImportError if unavailable."""
    try:
        factory = CONTENDERS[name]
    except KeyError:
        raise KeyError(f"unknown contender {name!r}; known: {list(CONTENDERS)}") from None
    return factory(X_in, y_in, X_out, y_out, alpha, method, dtype)


__all__ = [
    "CONTENDERS",
    "LOOP_CONTENDERS",
    "make_contender",
    "make_numpy_loop",
    "make_numpy_batched",
    "make_torch_loop",
    "make_higher_loop",
    "make_torch_func",
    "make_jax_jit_vmap",
]
