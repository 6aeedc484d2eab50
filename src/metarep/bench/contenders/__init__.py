"""Contenders: one meta-gradient step of FO-ANIL / exact ANIL, written the way the users of
each framework write it.

Every contender is a factory with the same signature::

    make_<name>(X_in, y_in, X_out, y_out, alpha, method, dtype) -> step
    step(B, w) -> (grad_B, grad_w, loss)        # NumPy arrays

``X_in`` (N, m_in, d), ``y_in`` (N, m_in), ``X_out`` (N, m_out, d), ``y_out`` (N, m_out) are
NumPy arrays, ``method`` is the name of FO-ANIL or exact ANIL (the two methods the step benchmark
times) and ``dtype`` is float32 or float64.
The factory converts or uploads the data once, so that ``step`` times only the meta-gradient.
``loss`` is the outer (meta) loss ``(1/N) sum_i L(B, w_i; X_out_i, y_out_i)``.

Factories of optional frameworks (torch, higher, jax, numba) import them lazily and raise
``ImportError`` with a clear message when the package is missing; nothing is ever installed.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from .higher_impl import make_higher_loop
from .jax_impl import make_jax_jit_vmap
from .metarep_impl import make_metarep
from .numpy_impl import make_numpy_batched, make_numpy_loop
from .torch_impl import make_torch_func, make_torch_loop

#: name -> factory, slowest first; the metarep entries are the library under test
CONTENDERS: dict[str, Callable[..., Callable]] = {
    "higher_loop": make_higher_loop,
    "torch_loop": make_torch_loop,
    "numpy_loop": make_numpy_loop,
    "torch_func": make_torch_func,
    "jax_jit_vmap": make_jax_jit_vmap,
    "numpy_batched": make_numpy_batched,
    "metarep[numpy]": partial(make_metarep, backend="numpy"),
    "metarep[numpy]/1thread": partial(make_metarep, backend="numpy", threads=1),
    "metarep[numba]": partial(make_metarep, backend="numba"),
    "metarep[numba]/1thread": partial(make_metarep, backend="numba", threads=1),
}

#: contenders that loop over tasks in Python (slow at large N: timed with fewer repeats)
LOOP_CONTENDERS = ("numpy_loop", "torch_loop", "higher_loop")

#: metarep itself, one entry per kernel backend, on its own choice of threads and on one thread
METAREP_CONTENDERS = ("metarep[numpy]", "metarep[numpy]/1thread", "metarep[numba]", "metarep[numba]/1thread")

#: what each contender is, for tables and documentation
DESCRIPTIONS = {
    "higher_loop": "per-task loop, PyTorch autograd through higher.innerloop_ctx",
    "torch_loop": "per-task loop, torch.autograd.grad (create_graph for exact ANIL)",
    "numpy_loop": "per-task loop over the closed-form gradient in NumPy",
    "torch_func": "torch.func: grad of the task-mean of vmap over tasks",
    "jax_jit_vmap": "jax.jit(value_and_grad of the task-mean of jax.vmap), float64 enabled",
    "numpy_batched": "plain vectorised NumPy (batched einsum/matmul, no fusion)",
    "metarep[numpy]": "metarep, chunked NumPy kernel",
    "metarep[numpy]/1thread": "metarep, chunked NumPy kernel, BLAS on one thread",
    "metarep[numba]": "metarep, fused numba kernel, on the threads metarep.compute.threads chooses",
    "metarep[numba]/1thread": "metarep, fused numba kernel, on one thread",
}


def metarep_contender(backend: str, one_thread: bool = False) -> str:
    """The contender name of metarep on kernel backend ``backend`` (on one thread)."""
    return f"metarep[{backend}]" + ("/1thread" if one_thread else "")


def make_contender(name, X_in, y_in, X_out, y_out, alpha, method, dtype):
    """Build contender ``name``; raises KeyError if unknown, ImportError if unavailable."""
    try:
        factory = CONTENDERS[name]
    except KeyError:
        raise KeyError(f"unknown contender {name!r}; known: {list(CONTENDERS)}") from None
    return factory(X_in, y_in, X_out, y_out, alpha, method, dtype)


__all__ = [
    "CONTENDERS",
    "DESCRIPTIONS",
    "LOOP_CONTENDERS",
    "METAREP_CONTENDERS",
    "make_contender",
    "metarep_contender",
    "make_metarep",
    "make_numpy_loop",
    "make_numpy_batched",
    "make_torch_loop",
    "make_higher_loop",
    "make_torch_func",
    "make_jax_jit_vmap",
]
