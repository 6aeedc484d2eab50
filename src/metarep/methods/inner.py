"""One vectorised inner loop and its exact reverse pass, shared by ANIL, FO-MAML and MAML (MATH 3).

Every task i starts from the shared (B, w) and takes `s` gradient steps of size alpha on its
inner set, either on the head only (ANIL) or on both layers (MAML):

    g_t   = S_i B_t w_t - c_i                      (prediction_gradient at theta_t = B_t w_t)
    w_t+1 = w_t - alpha B_t^T g_t
    B_t+1 = B_t - alpha g_t w_t^T                  (MAML only; ANIL keeps B_t = B)

Per-task matrices B_t (N, d, k') are never formed. Since every update of B is rank one,

    B_t = B - alpha sum_{r<t} g_r w_r^T,

so B_t w = B w - alpha sum_r g_r (w_r . w) and B_t^T x = B^T x - alpha sum_r w_r (g_r . x):
one (N, d) @ (d, k') GEMM plus batched dot products with the stored iterates.

The outer loss is L(B_s, w_s; X'_i, y'_i). Its gradient with respect to the adapted point is
(G_B, G_w) = (g' w_s^T, B_s^T g'). The exact methods pull this back through every inner step,
newest first. For one step (B_t, w_t) -> (B_t+1, w_t+1) with cotangents (Bbar, wbar):

    h     = -alpha (Bbar w_t + B_t wbar)            (cotangent of g_t)
    Bbar <- Bbar - alpha g_t wbar^T + (S h) w_t^T
    wbar <- wbar - alpha Bbar^T g_t + B_t^T (S h)   (Bbar on the right: the value before the update)

(for ANIL drop every Bbar on the right-hand sides: B_t = B, so Bbar only accumulates). S h is one
more call of the prediction-gradient kernel with y = None. Each Bbar is a sum of rank-one terms
a_j b_j^T stored as (N, d) and (N, k') factors; the task average of all of them is one GEMM.
The first-order variants stop after the cotangents at the adapted point: they treat the
Jacobian of the adapted parameters with respect to the shared ones as the identity.
"""

from __future__ import annotations

import numpy as np

from metarep.linear.params import Params
from metarep.linear.primitives import prediction_gradient


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise dot products of (N, n) arrays: (N,)."""
    return np.einsum("ni,ni->n", a, b)


class InnerPath:
    """The stored inner iterates of N tasks: heads W[t] (N, k') for t = 0..s, inner prediction
    gradients G[t] (N, d) for t = 0..s-1, and whether B was adapted too."""

    def __init__(self, B: np.ndarray, alpha: float, adapt_B: bool):
        self.B = B
        self.alpha = alpha
        self.adapt_B = adapt_B
        self.W: list[np.ndarray] = []
        self.G: list[np.ndarray] = []

    def theta(self, t: int) -> np.ndarray:
        """theta_t = B_t w_t for every task: (N, d)."""
        th = self.W[t] @ self.B.T
        if self.adapt_B:
            for r in range(t):
                th = th - self.alpha * self.G[r] * _dot(self.W[r], self.W[t])[:, None]
        return th

    def Bt_T(self, t: int, x: np.ndarray) -> np.ndarray:
        """B_t^T x_i for every task, x (N, d): (N, k')."""
        out = x @ self.B
        if self.adapt_B:
            for r in range(t):
                out = out - self.alpha * self.W[r] * _dot(self.G[r], x)[:, None]
        return out

    def Bt(self, t: int, u: np.ndarray) -> np.ndarray:
        """B_t u_i for every task, u (N, k'): (N, d)."""
        out = u @ self.B.T
        if self.adapt_B:
            for r in range(t):
                out = out - self.alpha * self.G[r] * _dot(self.W[r], u)[:, None]
        return out


def run_inner(B: np.ndarray, w: np.ndarray, X: np.ndarray, y: np.ndarray, *, alpha: float,
              inner_steps: int, adapt_B: bool) -> InnerPath:
    """Take `inner_steps` gradient steps on every task's inner set (X, y) and keep the path."""
    if int(inner_steps) != inner_steps or inner_steps < 1:
        raise ValueError(f"inner_steps must be an integer >= 1, got {inner_steps}")
    path = InnerPath(B, alpha, adapt_B)
    path.W.append(np.broadcast_to(w, (X.shape[0], w.shape[-1])))
    for t in range(int(inner_steps)):
        G, _ = prediction_gradient(X, path.theta(t), y)
        path.G.append(G)
        path.W.append(path.W[t] - alpha * path.Bt_T(t, G))
    return path


def meta_gradient(params: Params, tasks, *, alpha: float, inner_steps: int = 1, adapt_B: bool,
                  exact: bool) -> tuple[Params, float]:
    """Outer gradient of (1/N) sum_i L(adapted B_i, w_i; X'_i, y'_i) and that mean outer loss.

    adapt_B: adapt both layers in the inner loop (MAML) or the head only (ANIL);
    exact: the full chain rule through the inner steps, or the first-order approximation.
    """
    B, w = params
    N, s = tasks.n_tasks, int(inner_steps)
    path = run_inner(B, w, tasks.X_in, tasks.y_in, alpha=alpha, inner_steps=s, adapt_B=adapt_B)
    G_out, loss = prediction_gradient(tasks.X_out, path.theta(s), tasks.y_out)
    # Cotangents at the adapted point: Bbar = sum_j a_j b_j^T (per task), wbar (N, k').
    a_fac, b_fac = [G_out], [path.W[s]]
    wbar = path.Bt_T(s, G_out) if adapt_B else G_out @ B
    if exact:
        for t in range(s - 1, -1, -1):
            g_t, w_t = path.G[t], path.W[t]
            if adapt_B:
                Bbar_w = sum(a * _dot(b, w_t)[:, None] for a, b in zip(a_fac, b_fac))
                Bbar_T_g = sum(b * _dot(a, g_t)[:, None] for a, b in zip(a_fac, b_fac))
                h = -alpha * (Bbar_w + path.Bt(t, wbar))
            else:
                h = -alpha * (wbar @ B.T)
            Sh, _ = prediction_gradient(tasks.X_in, h, None)
            new_wbar = wbar + path.Bt_T(t, Sh)
            if adapt_B:
                new_wbar = new_wbar - alpha * Bbar_T_g
            a_fac += [-alpha * g_t, Sh]
            b_fac += [wbar, w_t]
            wbar = new_wbar
    grad_B = np.concatenate(a_fac).T @ np.concatenate(b_fac) / N
    return Params(grad_B, wbar.mean(axis=0)), float(loss.mean())
