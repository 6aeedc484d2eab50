"""NumPy contenders: a per-task Python loop and a plain vectorised step."""

from __future__ import annotations

import numpy as np

from ._common import prepare_arrays


def make_numpy_loop(X_in, y_in, X_out, y_out, alpha, method, dtype):
    """Per-task Python loop over the closed-form (FO-)ANIL meta-gradient."""
    first_order, dt, (N, m_in, m_out, _), (X_in, y_in, X_out, y_out) = prepare_arrays(
        X_in, y_in, X_out, y_out, method, dtype)
    alpha = dt.type(alpha)

    def step(B, w):
        B = np.asarray(B, dtype=dt)
        w = np.asarray(w, dtype=dt)
        grad_B = np.zeros_like(B)
        grad_w = np.zeros_like(w)
        loss = 0.0
        v = B @ w
        for i in range(N):
            Xi, yi, Xo, yo = X_in[i], y_in[i], X_out[i], y_out[i]
            g = Xi.T @ (Xi @ v - yi) / m_in            # inner gradient wrt Bw
            wi = w - alpha * (B.T @ g)                 # adapted head
            r = Xo @ (B @ wi) - yo
            loss += 0.5 * (r @ r) / m_out
            gp = Xo.T @ r / m_out                      # outer gradient wrt Bw_i
            q = B.T @ gp
            grad_B += np.outer(gp, wi)
            if first_order:
                grad_w += q
            else:
                SBq = Xi.T @ (Xi @ (B @ q)) / m_in     # S_i B q_i
                grad_w += q - alpha * (B.T @ SBq)
                grad_B -= alpha * (np.outer(g, q) + np.outer(SBq, w))
        return grad_B / N, grad_w / N, np.asarray(loss / N, dtype=dt)

    return step


def make_numpy_batched(X_in, y_in, X_out, y_out, alpha, method, dtype):
    """Plain vectorised NumPy step over the (N, m, d) arrays (no fusion, no chunking)."""
    first_order, dt, (N, m_in, m_out, _), (X_in, y_in, X_out, y_out) = prepare_arrays(
        X_in, y_in, X_out, y_out, method, dtype)
    alpha = dt.type(alpha)

    def step(B, w):
        B = np.asarray(B, dtype=dt)
        w = np.asarray(w, dtype=dt)
        r_in = X_in @ (B @ w) - y_in                               # (N, m_in)
        g = np.einsum("nmd,nm->nd", X_in, r_in) / m_in             # (N, d)
        W = w - alpha * (g @ B)                                    # (N, k) adapted heads
        r_out = np.einsum("nmd,nd->nm", X_out, W @ B.T) - y_out    # (N, m_out)
        loss = 0.5 * np.mean(np.sum(r_out * r_out, axis=1)) / m_out
        gp = np.einsum("nmd,nm->nd", X_out, r_out) / m_out         # (N, d)
        Q = gp @ B                                                 # (N, k)
        grad_B = gp.T @ W
        if first_order:
            grad_w = Q.sum(axis=0)
        else:
            t = np.einsum("nmd,nd->nm", X_in, Q @ B.T)
            SBQ = np.einsum("nmd,nm->nd", X_in, t) / m_in          # (N, d)
            grad_w = Q.sum(axis=0) - alpha * (SBQ.sum(axis=0) @ B)
            grad_B -= alpha * (g.T @ Q + np.outer(SBQ.sum(axis=0), w))
        return grad_B / N, grad_w / N, np.asarray(loss, dtype=dt)

    return step
