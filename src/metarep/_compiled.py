"""The numba-compiled kernels over tasks, in a module of their own: they are defined at module
level so that numba's on-disk cache finds them again in a new process, and importing this
module (hence numba) happens only when a compiled kernel is first used. What each computes,
and why it is written so, is documented where it is called: `kernels.prediction_gradient` and
`one_step.one_step_sums`."""

from __future__ import annotations

import numpy as np

from metarep.kernels import _BLOCK as TASK_BLOCK
from metarep.kernels import _FASTMATH, numba_module
from metarep.one_step import _BLOCK as ONE_STEP_BLOCK

numba = numba_module()


@numba.njit(fastmath=_FASTMATH, boundscheck=False, cache=True)
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


@numba.njit(parallel=True, cache=True, fastmath=_FASTMATH, error_model="numpy", nogil=True,
            boundscheck=False)
def prediction_gradient_kernel(X, theta, shared, y, has_y, G, loss):  # pragma: no cover - compiled
    """G[n] = X_n^T (X_n theta_n - y_n) / m and loss[n], for blocks of tasks in parallel; theta
    (1, d) shared or (N, d), float64; float32 data are accumulated in float64."""
    N, m, d = X.shape
    for b in numba.prange((N + TASK_BLOCK - 1) // TASK_BLOCK):
        acc = np.empty(d)
        for n in range(b * TASK_BLOCK, min(b * TASK_BLOCK + TASK_BLOCK, N)):
            s = task_gradient(X, y, has_y, n, theta[0 if shared else n], G[n], acc, 0.0)
            loss[n] = 0.5 * s / m


@numba.njit(boundscheck=False, cache=True)
def add_column_sums(A, out):  # pragma: no cover - compiled
    for j in range(A.shape[1]):
        total = 0.0
        for t in range(A.shape[0]):
            total += A[t, j]
        out[j] += total


@numba.njit(parallel=True, cache=True, fastmath=_FASTMATH, error_model="numpy", nogil=True,
            boundscheck=False)
def one_step_kernel(X_in, y_in, X_out, y_out, theta, M, P, second_order, q, zero,
                    g_out_g, cross_g, h_g, loss_g):  # pragma: no cover - compiled
    """Per group of blocks: sums of g'_i, g'_i g_i^T, S_i P g'_i (when second_order) and the
    outer squared residuals, into g_out_g (groups, d), cross_g (groups, d, d), h_g, loss_g.
    theta_i = theta + M g_i + q (theta . g_i) g_i."""
    N, _, d = X_in.shape
    nblocks = (N + ONE_STEP_BLOCK - 1) // ONE_STEP_BLOCK
    ngroups = cross_g.shape[0]
    for grp in numba.prange(ngroups):
        acc = np.empty(d, M.dtype)
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
