"""The compiled head-only outer pass of the two-layer network (`metarep.nonlinear.fused`), in a
module of its own for numba's on-disk cache (see `metarep._compiled`). What it computes, and
the derivation of every line, is in `nonlinear/fused.py`.

A unit is a fixed group of consecutive blocks of BLOCK tasks, with its own partial sums; the
groups are taken from a shared counter by `threads.run_units` and added in group order, so
results do not depend on the number of threads.
"""

from __future__ import annotations

import numba
import numpy as np
import scipy.linalg.cython_blas  # noqa: F401  (the BLAS numba's products call: loaded before the first

#                                 launch, so that kernels.step_threads keeps it on one thread from the start)
from metarep._compiled import KERNEL, ON_POOL, PARALLEL, fetch_add

# Tasks per block: a block's features, 32 x 30 x 50 doubles (384 KB) in the paper's setting,
# stay in cache from the product that makes them to the one that takes their gradient (32
# measured 5-10% faster than 64 or 128 there).
BLOCK = 32

@numba.njit(**KERNEL)
def _features(X, W1T, b1, has_bias, relu):  # pragma: no cover - compiled
    """act(X W1^T + b1) for rows X (r, d): (r, n), in a new array."""
    F = np.dot(X, W1T)
    r, n = F.shape
    for i in range(r):
        for k in range(n):
            z = F[i, k] + b1[k] if has_bias else F[i, k]
            F[i, k] = z if (not relu or z > 0.0) else 0.0
    return F


@numba.njit(**KERNEL)
def _add_layer_gradient(dZ, X, gW1, gb1, has_bias):  # pragma: no cover - compiled
    """gW1 (n, d) += dZ^T X for rows dZ (r, n), X (r, d); gb1 (n,) += the column sums of dZ."""
    gW1 += np.dot(dZ.T, X)
    if has_bias:
        for i in range(dZ.shape[0]):
            for k in range(dZ.shape[1]):
                gb1[k] += dZ[i, k]


@numba.njit(**KERNEL)
def _head_step(Fi, a, y, w, alpha, r, Wt):  # pragma: no cover - compiled
    """Task rows a.. of Fi, targets y (m_in,): r = F_i w - y, Wt = w - (alpha / m_in) F_i^T r."""
    m_in, n = r.shape[0], w.shape[0]
    for j in range(m_in):
        s = 0.0
        for k in range(n):
            s += Fi[a + j, k] * w[k]
        r[j] = s - y[j]
    Wt[:] = w
    for j in range(m_in):                          # row by row: contiguous reads
        coef = -alpha / m_in * r[j]
        for k in range(n):
            Wt[k] += coef * Fi[a + j, k]


@numba.njit(**KERNEL)
def _outer_residuals(Fo, c, y, Wt, relu, u):  # pragma: no cover - compiled
    """Task rows c.. of Fo, targets y (m_out,): r' = F'_i W_i - y; u = F'_i^T r' / m_out; the rows
    of Fo become dZ' = (r' W_i^T / m_out) * act'(Z'). Returns |r'|^2 / (2 m_out)."""
    m_out, n = y.shape[0], Wt.shape[0]
    u[:] = 0.0
    loss = 0.0
    for j in range(m_out):
        s = 0.0
        for k in range(n):
            s += Fo[c + j, k] * Wt[k]
        s -= y[j]
        loss += 0.5 * s * s / m_out
        for k in range(n):
            u[k] += s * Fo[c + j, k] / m_out
            Fo[c + j, k] = s * Wt[k] / m_out if Fo[c + j, k] != 0.0 or not relu else 0.0
    return loss


@numba.njit(**KERNEL)
def _through_inner_step(Fi, a, r, u, w, alpha, relu, Fu, gw, dFi):  # pragma: no cover - compiled
    """ANIL's terms through W_i = w - (alpha / m_in) F_i^T (F_i w - y_i): gw -= (alpha / m_in)
    F_i^T F_i u, and rows a.. of dFi = -(alpha / m_in) (r u^T + F_i u w^T) * act'(Z_i)."""
    m_in, n = r.shape[0], w.shape[0]
    for j in range(m_in):
        s = 0.0
        for k in range(n):
            s += Fi[a + j, k] * u[k]
        Fu[j] = s
    for j in range(m_in):
        coef = -alpha / m_in * Fu[j]
        for k in range(n):
            gw[k] += coef * Fi[a + j, k]
    for j in range(m_in):
        for k in range(n):
            live = not relu or Fi[a + j, k] > 0.0
            dFi[a + j, k] = -alpha / m_in * (r[j] * u[k] + Fu[j] * w[k]) if live else 0.0


@numba.njit(**KERNEL)
def _block(t0, t1, X_in, y_in, X_out, y_out, W1T, b1, has_bias, w, alpha, relu, exact,
           gW1, gb1, gw):  # pragma: no cover - compiled
    """Tasks t0..t1: adds their outer-gradient sums into gW1, gb1, gw; returns their outer
    squared residuals sum_i |r'_i|^2 / (2 m_out)."""
    nb = t1 - t0
    m_in, m_out, d = X_in.shape[1], X_out.shape[1], X_in.shape[2]
    n = w.shape[0]
    Xi = X_in[t0:t1].reshape(nb * m_in, d)
    Xo = X_out[t0:t1].reshape(nb * m_out, d)
    Fi = _features(Xi, W1T, b1, has_bias, relu)
    Fo = _features(Xo, W1T, b1, has_bias, relu)
    r, Fu = np.empty(m_in), np.empty(m_in)
    Wt, u = np.empty(n), np.empty(n)
    dFi = np.empty((nb * m_in, n)) if exact else np.empty((0, n))
    loss = 0.0
    for t in range(nb):
        _head_step(Fi, t * m_in, y_in[t0 + t], w, alpha, r, Wt)
        loss += _outer_residuals(Fo, t * m_out, y_out[t0 + t], Wt, relu, u)
        gw += u                                    # FO-ANIL: dW_i/dw taken as the identity
        if exact:
            _through_inner_step(Fi, t * m_in, r, u, w, alpha, relu, Fu, gw, dFi)
    _add_layer_gradient(Fo, Xo, gW1, gb1, has_bias)                # Fo holds dZ' by now
    if exact:
        _add_layer_gradient(dFi, Xi, gW1, gb1, has_bias)
    return loss


@numba.njit(**KERNEL)
def head_pass_units(X_in, y_in, X_out, y_out, W1T, b1, has_bias, w, alpha, relu, exact,
                    gW1_g, gb1_g, gw_g, loss_g, counter):  # pragma: no cover - compiled
    """For the groups this thread takes from `counter`: group g's sums into row g of gW1_g
    (G, n, d), gb1_g (G, n), gw_g (G, n), loss_g (G,)."""
    N = X_in.shape[0]
    nblocks = (N + BLOCK - 1) // BLOCK
    ngroups = gW1_g.shape[0]
    last = False
    g = fetch_add(counter, 0)
    while g < ngroups:
        gW1_g[g] = 0.0
        gb1_g[g] = 0.0
        gw_g[g] = 0.0
        s = 0.0
        for b in range(g * nblocks // ngroups, (g + 1) * nblocks // ngroups):
            s += _block(b * BLOCK, min(b * BLOCK + BLOCK, N), X_in, y_in, X_out, y_out, W1T, b1, has_bias, w,
                        alpha, relu, exact, gW1_g[g], gb1_g[g], gw_g[g])
        loss_g[g] = s
        last = fetch_add(counter, 1) == ngroups - 1
        g = fetch_add(counter, 0)
    return last


@numba.njit(**PARALLEL)
def _head_pass_on_pool(threads, X_in, y_in, X_out, y_out, W1T, b1, has_bias, w, alpha, relu, exact,
                       gW1_g, gb1_g, gw_g, loss_g, counter):  # pragma: no cover - compiled
    for _ in numba.prange(threads):
        head_pass_units(X_in, y_in, X_out, y_out, W1T, b1, has_bias, w, alpha, relu, exact, gW1_g, gb1_g, gw_g,
                        loss_g, counter)


ON_POOL[head_pass_units] = _head_pass_on_pool
