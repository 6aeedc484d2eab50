"""The compiled head-only outer pass of the network (`metarep.nonlinear.fused`), in a module of
its own for numba's on-disk cache (see `metarep.compute._compiled`). What it computes, and the
derivation of every line, is in `nonlinear/fused.py`.

A unit is a fixed group of consecutive blocks of tasks (`fused.BLOCK`), with its own partial sums; the
groups are taken from a shared counter by `threads.run_units` and added in group order, so
results do not depend on the number of threads. The tasks and layers may be float32 or float64
(the matrix products in that precision); the per-task head arithmetic and the partial sums are
in float64.
"""

from __future__ import annotations

import numba
import numpy as np
import scipy.linalg.cython_blas  # noqa: F401  (the BLAS numba's products call: loaded before the first

#                                 launch, so that kernels.step_threads keeps it on one thread from the start)
from metarep.compute._compiled import KERNEL, ON_POOL, PARALLEL, fetch_add, keyed_cache, restore_cache

_previous_cache = keyed_cache()     # every kernel below is cached under _compiled.cache_dir()


@numba.njit(**KERNEL)
def _features(X, WT, b, has_bias, relu):  # pragma: no cover - compiled
    """act(X W^T + b) for rows X (r, d) and WT = W^T (d, n): (r, n), in a new array."""
    F = np.dot(X, WT)
    r, n = F.shape
    for i in range(r):
        for k in range(n):
            z = F[i, k] + b[k] if has_bias else F[i, k]
            F[i, k] = z if (not relu or z > 0.0) else 0.0
    return F


@numba.njit(**KERNEL)
def _add_layer_gradient(dZ, X, gW, gb, has_bias):  # pragma: no cover - compiled
    """gW (n, d) += dZ^T X for rows dZ (r, n), X (r, d); gb (n,) += the column sums of dZ."""
    gW += np.dot(dZ.T, X)
    if has_bias:
        for i in range(dZ.shape[0]):
            for k in range(dZ.shape[1]):
                gb[k] += dZ[i, k]


@numba.njit(**KERNEL)
def _body_gradient(dZ, H, X, W2, three, has_bias, relu, gW1, gb1, gW2, gb2):  # pragma: no cover - compiled
    """The body's gradient from the last layer's dZ (r, n): three layers, gW2 += dZ^T H, dH = dZ W2
    and dZ1 = dH * act'(Z1) (H = act(Z1), (r, n1)); then gW1 += dZ1^T X."""
    if three:
        _add_layer_gradient(dZ, H, gW2, gb2, has_bias)
        dZ = np.dot(dZ, W2)
        for i in range(dZ.shape[0]):
            for k in range(dZ.shape[1]):
                if relu and H[i, k] <= 0.0:
                    dZ[i, k] = 0.0
    _add_layer_gradient(dZ, X, gW1, gb1, has_bias)


@numba.njit(**KERNEL)
def _head_step(Fi, a, y, w, alpha, r, Wt):  # pragma: no cover - compiled
    """Task rows a.. of Fi, targets y (m_in,), head w: r = F_i w - y, Wt = w - (alpha / m_in) F_i^T r."""
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
def _through_inner_step(Fi, a, r, g, w, alpha, relu, Fg, gw, dFi, first, carry):  # pragma: no cover - compiled
    """ANIL's terms through one inner step W' = w - (alpha / m_in) F_i^T r (r = F_i w - y_i), g the
    derivative of the loss in W': rows a.. of dFi = (first) or += -(alpha / m_in) (r g^T +
    F_i g w^T) * act'(Z_i); gw -= (alpha / m_in) F_i^T F_i g, and g too when `carry` (g becomes
    the derivative in w)."""
    m_in, n = r.shape[0], w.shape[0]
    for j in range(m_in):
        s = 0.0
        for k in range(n):
            s += Fi[a + j, k] * g[k]
        Fg[j] = s
    for j in range(m_in):
        for k in range(n):
            live = not relu or Fi[a + j, k] > 0.0
            v = -alpha / m_in * (r[j] * g[k] + Fg[j] * w[k])
            dFi[a + j, k] = (v if first else dFi[a + j, k] + v) if live else 0.0
    for j in range(m_in):
        coef = -alpha / m_in * Fg[j]
        for k in range(n):
            gw[k] += coef * Fi[a + j, k]
    if carry:
        for j in range(m_in):
            coef = -alpha / m_in * Fg[j]
            for k in range(n):
                g[k] += coef * Fi[a + j, k]


@numba.njit(**KERNEL)
def _block(t0, t1, X_in, y_in, X_out, y_out, W1T, b1, W2T, b2, has_bias, w, alpha, steps, relu, exact,
           gW1, gb1, gW2, gb2, gw):  # pragma: no cover - compiled
    """Tasks t0..t1: adds their outer-gradient sums into gW1, gb1, gW2, gb2, gw; returns their
    outer squared residuals sum_i |r'_i|^2 / (2 m_out). Three layers when W2T is not empty."""
    nb = t1 - t0
    m_in, m_out, d = X_in.shape[1], X_out.shape[1], X_in.shape[2]
    n = w.shape[0]
    three = W2T.size > 0
    Xi = X_in[t0:t1].reshape(nb * m_in, d)
    Xo = X_out[t0:t1].reshape(nb * m_out, d)
    Hi = _features(Xi, W1T, b1, has_bias, relu)
    Ho = _features(Xo, W1T, b1, has_bias, relu)
    Fi = _features(Hi, W2T, b2, has_bias, relu) if three else Hi
    Fo = _features(Ho, W2T, b2, has_bias, relu) if three else Ho
    Ws, R = np.empty((steps + 1, n)), np.empty((steps, m_in))
    g, u, Fg = np.empty(n), np.empty(n), np.empty(m_in)
    dFi = np.empty((nb * m_in, n) if exact else (0, n), Fi.dtype)
    loss = 0.0
    for t in range(nb):
        Ws[0] = w
        for s in range(steps):
            _head_step(Fi, t * m_in, y_in[t0 + t], Ws[s], alpha, R[s], Ws[s + 1])
        loss += _outer_residuals(Fo, t * m_out, y_out[t0 + t], Ws[steps], relu, u)
        gw += u                                    # FO-ANIL: dW_i/dw taken as the identity
        if exact:
            g[:] = u
            for s in range(steps - 1, -1, -1):
                _through_inner_step(Fi, t * m_in, R[s], g, Ws[s], alpha, relu, Fg, gw, dFi, s == steps - 1, s > 0)
    W2 = W2T.T.copy()
    _body_gradient(Fo, Ho, Xo, W2, three, has_bias, relu, gW1, gb1, gW2, gb2)    # Fo holds dZ' by now
    if exact:
        _body_gradient(dFi, Hi, Xi, W2, three, has_bias, relu, gW1, gb1, gW2, gb2)
    return loss


@numba.njit(**KERNEL)
def head_pass_units(X_in, y_in, X_out, y_out, W1T, b1, W2T, b2, has_bias, w, alpha, steps, relu, exact, block,
                    gW1_g, gb1_g, gW2_g, gb2_g, gw_g, loss_g, counter):  # pragma: no cover - compiled
    """For the groups of blocks of `block` tasks this thread takes from `counter`: group g's sums
    into row g of gW1_g (G, n1, d), gb1_g (G, n1), gW2_g (G, n, n1), gb2_g (G, n), gw_g (G, n),
    loss_g (G,)."""
    N = X_in.shape[0]
    nblocks = (N + block - 1) // block
    ngroups = gW1_g.shape[0]
    last = False
    g = fetch_add(counter, 0)
    while g < ngroups:
        gW1_g[g] = 0.0
        gb1_g[g] = 0.0
        gW2_g[g] = 0.0
        gb2_g[g] = 0.0
        gw_g[g] = 0.0
        s = 0.0
        for b in range(g * nblocks // ngroups, (g + 1) * nblocks // ngroups):
            s += _block(b * block, min(b * block + block, N), X_in, y_in, X_out, y_out, W1T, b1, W2T, b2, has_bias,
                        w, alpha, steps, relu, exact, gW1_g[g], gb1_g[g], gW2_g[g], gb2_g[g], gw_g[g])
        loss_g[g] = s
        last = fetch_add(counter, 1) == ngroups - 1
        g = fetch_add(counter, 0)
    return last


@numba.njit(**PARALLEL)
def _head_pass_on_pool(threads, X_in, y_in, X_out, y_out, W1T, b1, W2T, b2, has_bias, w, alpha, steps, relu,
                       exact, block, gW1_g, gb1_g, gW2_g, gb2_g, gw_g, loss_g, counter):  # pragma: no cover - compiled
    for _ in numba.prange(threads):
        head_pass_units(X_in, y_in, X_out, y_out, W1T, b1, W2T, b2, has_bias, w, alpha, steps, relu, exact, block,
                        gW1_g, gb1_g, gW2_g, gb2_g, gw_g, loss_g, counter)


ON_POOL[head_pass_units] = _head_pass_on_pool

restore_cache(_previous_cache)
