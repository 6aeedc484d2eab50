"""Test-time gradient steps of the network on each new task, in NumPy (no torch): the head
alone, or every layer (as MAML adapts), on the inner loss L = 1/(2K) ||f(X) - y||^2 of each
task (metarep's inner loss, MATH 3). Every task holds its own copy of the parameters.

The backward pass for phi(x) = h_n, h_i = act(z_i), z_i = W_i h_{i-1} + b_i, h_0 = x (n = layers - 1)
and f = w^T phi, with r = (f - y) / K (T, K):
    dL/dw = sum_k r_k phi_k;  dL/dh_n = r w^T;  then for i = n, ..., 1:
    dL/dz_i = dL/dh_i * act'(z_i);  dL/dW_i = dz_i^T h_{i-1};  dL/db_i = sum_k dz_i;  dL/dh_{i-1} = dz_i W_i.
"""

from __future__ import annotations

import numpy as np


def _layer_names(P: dict) -> list[tuple[str, str]]:
    """[("W1", "b1"), ("W2", "b2"), ...] of the layers present in P, first to last."""
    return [(f"W{i}", f"b{i}") for i in range(1, len(P) + 1) if f"W{i}" in P]


def per_task(body: dict, w: np.ndarray, T: int) -> dict:
    """Every parameter copied once per task, {name: (T, ...)}, the head under "w"."""
    return {name: np.repeat(np.asarray(a, dtype=np.float64)[None], T, axis=0) for name, a in {**body, "w": w}.items()}


def forward(P: dict, X: np.ndarray, activation: str) -> tuple[np.ndarray, list]:
    """f (T, K) for per-task parameters P on inputs X (T, K, d), and the layers' (z, h) kept for
    the backward pass."""
    h, cache = X, []
    for W, b in _layer_names(P):
        z = h @ np.swapaxes(P[W], 1, 2) + (P[b][:, None, :] if b in P else 0.0)
        cache.append((h, z))
        h = z if activation == "identity" else np.maximum(z, 0.0)
    return (h @ P["w"][..., None])[..., 0], [*cache, h]


def gradient(P: dict, X: np.ndarray, y: np.ndarray, activation: str, *, body: bool) -> dict:
    """dL/dtheta of every task (module docstring), {name: (T, ...)}; the head's alone unless `body`."""
    f, cache = forward(P, X, activation)
    phi = cache[-1]
    r = (f - y) / X.shape[1]
    grads = {"w": (r[:, None, :] @ phi)[:, 0]}
    if not body:
        return grads
    dh = r[..., None] * P["w"][:, None, :]
    for (W, b), (h, z) in reversed(list(zip(_layer_names(P), cache[:-1]))):
        dz = dh if activation == "identity" else dh * (z > 0)
        grads[W] = np.swapaxes(dz, 1, 2) @ h
        if b in P:
            grads[b] = dz.sum(axis=1)
        dh = dz @ P[W]
    return grads


def adapt(P: dict, X: np.ndarray, y: np.ndarray, *, activation: str, alpha: float, steps: int,
          body: bool) -> dict:
    """`steps` gradient steps of size alpha on each task's parameters (the head's alone unless `body`)."""
    for _ in range(steps):
        g = gradient(P, X, y, activation, body=body)
        P = {name: a - alpha * g[name] if name in g else a for name, a in P.items()}
    return P
