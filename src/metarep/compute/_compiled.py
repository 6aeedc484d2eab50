"""The numba-compiled kernels over tasks, in a module of their own: they are defined at module
level so that numba's on-disk cache finds them again in a new process, and importing this
module (hence numba) happens only when a compiled kernel is first used. What each computes,
and why it is written so, is documented where it is called: `kernels.prediction_gradient`,
`one_step.one_step_sums` and `population_formula.run_step`.

Each kernel works through fixed units of work (blocks of tasks, groups of blocks), taking the
next unit from a shared counter (`fetch_add`) until none is left; `threads.run_units` runs it on
the calling thread and on helper threads at once. A thread that the operating system stops
(another process took its core) then holds back at most the unit it is on, and one that never
started holds back nothing. The units and the order of every sum within and across them are
fixed, so results do not depend on the number of threads or on which thread took which unit.
The counter is an int64 array [next unit, units finished]; a kernel returns True on the thread
that finished the last unit.

numba's on-disk cache checks only the file of the function it compiles, not the files of the
functions that one calls (an edited `population_formula.run_step` left the batched step on the
old code): the kernels are cached in a directory named by a hash of all their sources
(`cache_dir`).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import numba
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic, overload

from metarep.linear import population_formula

#: the sources the compiled kernels are made of (paths in the metarep package); an edit of any one of them gives
#: a new cache directory (tests/test_hazards.py checks that every metarep module these import is here)
SOURCES = ("compute/_compiled.py", "compute/_compiled_network.py", "linear/population_formula.py")


def cache_dir() -> str:
    """The directory of the kernels' numba cache: <root>/metarep-<hash of SOURCES>, the root
    being $NUMBA_CACHE_DIR when set, else the first writable of the package's __pycache__,
    ~/.cache/metarep (or $XDG_CACHE_HOME/metarep) and the temporary directory."""
    here = Path(__file__).parents[1]
    digest = hashlib.sha256()
    for name in SOURCES:
        source = here / name
        digest.update(name.encode() + b"\0" + (source.read_bytes() if source.exists() else b""))
    name = "metarep-" + digest.hexdigest()[:16]
    user = os.environ.get("NUMBA_CACHE_DIR", "").strip()
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    roots = [user] if user else [str(here / "__pycache__"), os.path.join(xdg, "metarep"),
                                 os.path.join(tempfile.gettempdir(), f"metarep-{os.getuid()}")]
    for root in roots:
        path = os.path.join(root, name)
        try:
            os.makedirs(path, exist_ok=True)
            tempfile.TemporaryFile(dir=path).close()
            return path
        except OSError:
            continue
    return os.path.join(roots[0], name)


def keyed_cache() -> str:
    """Point numba's cache at `cache_dir()` for the kernels decorated from here on; returns the
    setting to put back (`restore_cache`) once a module's kernels are decorated (numba reads it
    when a function is decorated), so that other numba code in the process keeps its own."""
    previous = _NUMBA_CONFIG.CACHE_DIR
    _NUMBA_CONFIG.CACHE_DIR = cache_dir()
    return previous


def restore_cache(previous: str) -> None:
    _NUMBA_CONFIG.CACHE_DIR = previous


_NUMBA_CONFIG: Any = numba.config      # its settings are made at run time (mypy sees none)


_previous_cache = keyed_cache()

# Tasks per unit of the prediction-gradient kernel, and per block of the one-step kernel
# (a block's inner rows, 64 x 20 x 50 doubles in the paper's setting, stay in cache between
# its passes, and its products are large enough for BLAS).
TASK_BLOCK = 32
ONE_STEP_BLOCK = 64

# Reassociation (and fused multiply-add) only: lets the dot products vectorise, and keeps
# NaN and inf semantics so a diverging run is still detected.
FASTMATH = {"reassoc", "contract"}

KERNEL: dict[str, Any] = {"cache": True, "fastmath": FASTMATH, "error_model": "numpy", "nogil": True,
                          "boundscheck": False}


def _fetch_add(typingctx, counter, index):
    """counter[index] += 1 atomically (an int64 array); returns the value before."""
    if not (isinstance(counter, types.Array) and counter.dtype == types.int64
            and isinstance(index, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        array = context.make_array(signature.args[0])(context, builder, args[0])
        i = context.cast(builder, args[1], signature.args[1], types.intp)
        return builder.atomic_rmw("add", builder.gep(array.data, [i]), ir.Constant(ir.IntType(64), 1),
                                  "seq_cst")

    return types.int64(counter, index), codegen


fetch_add: Any = intrinsic(_fetch_add)


@numba.njit(fastmath=FASTMATH, boundscheck=False, cache=True)
def task_gradient(X, y, has_y, n, th, out, acc, zero):  # pragma: no cover - compiled
    """out = X_n^T (X_n th - y_n) / m, reading task n's rows once; returns ||X_n th - y_n||^2.
    Within the task the arithmetic is in the precision of `zero` and `acc`."""
    m, d = X.shape[1], X.shape[2]
    for j in range(d):
        acc[j] = zero
    s = 0.0
    for i in range(m):
        r = zero
        for j in range(d):
            r += X[n, i, j] * th[j]
        if has_y:
            r -= y[n, i]
        s += r * r
        for j in range(d):
            acc[j] += r * X[n, i, j]
    for j in range(d):
        out[j] = acc[j] / m
    return s


# ----------------------------------------------------------------------------------------
# The prediction gradient: a unit is a block of TASK_BLOCK tasks
# ----------------------------------------------------------------------------------------

@numba.njit(**KERNEL)
def _gradient_block(X, theta, shared, y, has_y, G, loss, b, acc):  # pragma: no cover - compiled
    N, m = X.shape[0], X.shape[1]
    for n in range(b * TASK_BLOCK, min(b * TASK_BLOCK + TASK_BLOCK, N)):
        s = task_gradient(X, y, has_y, n, theta[0 if shared else n], G[n], acc, 0.0)
        loss[n] = 0.5 * s / m


def gradient_units(X) -> int:
    return (X.shape[0] + TASK_BLOCK - 1) // TASK_BLOCK


@numba.njit(**KERNEL)
def prediction_gradient_units(X, theta, shared, y, has_y, G, loss, counter):  # pragma: no cover - compiled
    """G[n] = X_n^T (X_n theta_n - y_n) / m and loss[n], for the blocks of tasks this thread
    takes from `counter`; theta (1, d) shared or (N, d), float64; float32 data are accumulated
    in float64."""
    nblocks = (X.shape[0] + TASK_BLOCK - 1) // TASK_BLOCK
    acc = np.empty(X.shape[2])
    last = False
    b = fetch_add(counter, 0)
    while b < nblocks:
        _gradient_block(X, theta, shared, y, has_y, G, loss, b, acc)
        last = fetch_add(counter, 1) == nblocks - 1
        b = fetch_add(counter, 0)
    return last


# ----------------------------------------------------------------------------------------
# The one-step sums: a unit is a fixed group of consecutive blocks, with its own partial sums
# ----------------------------------------------------------------------------------------

@numba.njit(boundscheck=False, cache=True)
def add_column_sums(A, out):  # pragma: no cover - compiled
    for j in range(A.shape[1]):
        total = 0.0
        for t in range(A.shape[0]):
            total += A[t, j]
        out[j] += total


@numba.njit(**KERNEL)
def _one_step_group(grp, X_in, y_in, X_out, y_out, theta, M, P, second_order, q, zero,
                    g_out_g, cross_g, h_g, loss_g, acc):  # pragma: no cover - compiled
    """Group `grp`'s sums of g'_i, g'_i g_i^T, S_i P g'_i (when second_order) and the outer
    squared residuals, into row `grp` of g_out_g, cross_g, h_g, loss_g, with
    theta_i = theta + M g_i + q (theta . g_i) g_i."""
    N, _, d = X_in.shape
    nblocks = (N + ONE_STEP_BLOCK - 1) // ONE_STEP_BLOCK
    ngroups = cross_g.shape[0]
    cross_g[grp] = 0.0
    g_out_g[grp] = 0.0
    if second_order:
        h_g[grp] = 0.0
    s = 0.0
    for b in range(grp * nblocks // ngroups, (grp + 1) * nblocks // ngroups):
        start = b * ONE_STEP_BLOCK
        nb = min(start + ONE_STEP_BLOCK, N) - start
        G = np.empty((nb, d), M.dtype)
        G_out = np.empty((nb, d), M.dtype)
        for t in range(nb):
            task_gradient(X_in, y_in, True, start + t, theta, G[t], acc, zero)
        Theta = np.dot(G, M)                     # the block's theta_i - theta
        for t in range(nb):
            row = Theta[t]
            c = 0.0
            if q != 0.0:
                for j in range(d):
                    c += theta[j] * G[t, j]
                c *= q
            for j in range(d):
                row[j] += theta[j] + c * G[t, j]
            s += task_gradient(X_out, y_out, True, start + t, row, G_out[t], acc, zero)
        cross_g[grp] += np.dot(G_out.T, G)
        add_column_sums(G_out, g_out_g[grp])
        if second_order:
            Q = np.dot(G_out, P)                 # the block's P g'_i
            for t in range(nb):
                task_gradient(X_in, y_in, False, start + t, Q[t], Theta[t], acc, zero)
            add_column_sums(Theta, h_g[grp])     # Theta reused for S_i P g'_i
    loss_g[grp] = 0.5 * s / X_out.shape[1]


@numba.njit(**KERNEL)
def one_step_units(X_in, y_in, X_out, y_out, theta, M, P, second_order, q, zero,
                   g_out_g, cross_g, h_g, loss_g, counter):  # pragma: no cover - compiled
    """`_one_step_group` for the groups this thread takes from `counter`."""
    ngroups = cross_g.shape[0]
    acc = np.empty(X_in.shape[2], M.dtype)
    last = False
    grp = fetch_add(counter, 0)
    while grp < ngroups:
        _one_step_group(grp, X_in, y_in, X_out, y_out, theta, M, P, second_order, q, zero,
                        g_out_g, cross_g, h_g, loss_g, acc)
        last = fetch_add(counter, 1) == ngroups - 1
        grp = fetch_add(counter, 0)
    return last


# ----------------------------------------------------------------------------------------
# The population step: a unit is a block of RUN_BLOCK runs
# ----------------------------------------------------------------------------------------

RUN_BLOCK = 4


@overload(population_formula.axpy, jit_options={"fastmath": FASTMATH})
def _axpy(out, a, X):
    def loop(out, a, X):  # pragma: no cover - compiled
        for i in range(out.shape[0]):
            for j in range(out.shape[1]):
                out[i, j] += a * X[i, j]
    return loop


@overload(population_formula.add_outer, jit_options={"fastmath": FASTMATH})
def _add_outer(out, u, v):
    def loop(out, u, v):  # pragma: no cover - compiled
        for i in range(out.shape[0]):
            for j in range(out.shape[1]):
                out[i, j] += u[i] * v[j]
    return loop


population_run = numba.njit(**KERNEL)(population_formula.run_step)


@numba.njit(**KERNEL)
def population_units(B, w, alpha, inv_m, Bs, mu, Sig, M, b, BsM, tr_sig, tr_m, s2,
                     out_B, out_w, loss, counter):  # pragma: no cover - compiled
    """`population_formula.run_step` for the blocks of runs this thread takes from `counter`:
    B (S, d, k'), w (S, k'), alpha, inv_m (S,); out_B, out_w (the gradient), loss like B, w, alpha."""
    S = B.shape[0]
    nunits = (S + RUN_BLOCK - 1) // RUN_BLOCK
    last = False
    u = fetch_add(counter, 0)
    while u < nunits:
        for s in range(u * RUN_BLOCK, min(u * RUN_BLOCK + RUN_BLOCK, S)):
            loss[s] = population_run(B[s], w[s], alpha[s], inv_m[s], Bs, mu, Sig, M, b, BsM, tr_sig, tr_m, s2,
                                     out_B[s], out_w[s])
        last = fetch_add(counter, 1) == nunits - 1
        u = fetch_add(counter, 0)
    return last


# ----------------------------------------------------------------------------------------
# The same unit kernels on numba's own threads (`threads.run_units` on an idle machine)
# ----------------------------------------------------------------------------------------

PARALLEL: dict[str, Any] = {"parallel": True, "cache": True, "nogil": True}


@numba.njit(**PARALLEL)
def _gradient_on_pool(threads, X, theta, shared, y, has_y, G, loss, counter):  # pragma: no cover - compiled
    for _ in numba.prange(threads):
        prediction_gradient_units(X, theta, shared, y, has_y, G, loss, counter)


@numba.njit(**PARALLEL)
def _one_step_on_pool(threads, X_in, y_in, X_out, y_out, theta, M, P, second_order, q, zero,
                      g_out_g, cross_g, h_g, loss_g, counter):  # pragma: no cover - compiled
    for _ in numba.prange(threads):
        one_step_units(X_in, y_in, X_out, y_out, theta, M, P, second_order, q, zero, g_out_g, cross_g, h_g,
                       loss_g, counter)


@numba.njit(**PARALLEL)
def _population_on_pool(threads, B, w, alpha, inv_m, Bs, mu, Sig, M, b, BsM, tr_sig, tr_m, s2,
                        out_B, out_w, loss, counter):  # pragma: no cover - compiled
    for _ in numba.prange(threads):
        population_units(B, w, alpha, inv_m, Bs, mu, Sig, M, b, BsM, tr_sig, tr_m, s2, out_B, out_w, loss, counter)


#: each unit kernel's launch on numba's thread pool: `threads` loops of the kernel at once, every
#: one taking units from the same counter, so the work and its sums are the helpers' exactly
ON_POOL = {prediction_gradient_units: _gradient_on_pool, one_step_units: _one_step_on_pool,
           population_units: _population_on_pool}

restore_cache(_previous_cache)
