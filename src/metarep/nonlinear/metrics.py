"""What is tracked while the network trains (NumPy, no torch).

The first layer plays the part of B^T: with B = W1^T the linear model's quantities keep their
names and meaning (align_norm = ||W1 B*||_2, sigma_min, perp_norm = ||W1 (I - B* B*^T)||_2, the
singular values sv_i of W1), and perp_ratio = perp_norm / align_norm: W1 -> c W1, w -> w / c leaves
a bias-free relu network's function unchanged and scales both norms by c, so only their ratio
measures unlearning. The function itself is measured by grad_perp_share, the share of the energy
of its input gradient outside span(B*), scale-free too.

The representation phi(x), the head's input, is measured on a fixed probe set of inputs X (n, d):
the eigenvalues of its covariance (phi_ev_i, descending), their effective rank exp(H(p)) with
p_i = ev_i / sum(ev) (Roy and Vetterli's entropy rank: between 1 and the width, the number of
equal directions it would take to spread the variance as evenly), and the R^2 of the best affine
prediction of the teacher's features phi*(x) (B*^T x, or relu(B*^T x) for the relu teacher) from
phi(x) (1: the representation keeps the teacher's features linearly; 0: none of them).
"""

from __future__ import annotations

import numpy as np

from metarep.families import family_of
from metarep.families.measures import span_outside
from metarep.linear import metrics
from metarep.nonlinear.model import MLPParams, activate, body_layers, features


def effective_rank(eigenvalues: np.ndarray) -> float:
    """exp of the entropy of the normalised nonnegative spectrum (0 for a zero spectrum)."""
    ev = np.clip(np.asarray(eigenvalues, dtype=np.float64), 0.0, None)
    total = ev.sum()
    if not total > 0:
        return 0.0
    p = ev[ev > 0] / total
    return float(np.exp(-(p * np.log(p)).sum()))


def linear_r2(Phi: np.ndarray, Z: np.ndarray) -> float:
    """1 - ||Z - Zhat||^2 / ||Z - mean Z||^2, Zhat the least-squares affine prediction of
    Z (n, k) from Phi (n, width)."""
    Zc = Z - Z.mean(axis=0)
    Pc = Phi - Phi.mean(axis=0)
    coef, *_ = np.linalg.lstsq(Pc, Zc, rcond=None)
    resid = Zc - Pc @ coef
    return float(1.0 - (resid * resid).sum() / (Zc * Zc).sum())


def representation(params: MLPParams, X_probe: np.ndarray, problem, activation: str) -> dict:
    """phi's covariance spectrum (descending), effective rank and the R^2 of the teacher's
    features phi*(x) from phi(x) on the probe inputs."""
    Phi = features(X_probe, params.body(), activation)
    ev = np.linalg.eigvalsh(np.cov(Phi, rowvar=False).reshape(Phi.shape[1], Phi.shape[1]))[::-1]
    return {"phi_eigenvalues": ev, "effective_rank": effective_rank(ev),
            "r2": linear_r2(Phi, problem.teacher_features(X_probe))}


def mean_head(params: MLPParams) -> np.ndarray:
    """The task-averaged head (width,): the shared head w, or the mean of per-task heads w (N, width)."""
    return params.w if params.w.ndim == 1 else params.w.mean(axis=0)


def _slope(z: np.ndarray, activation: str) -> np.ndarray:
    """act'(z) (relu'(0) = 0, as torch's autograd takes it)."""
    return np.ones_like(z) if activation == "identity" else (z > 0).astype(z.dtype)


def input_gradients(params: MLPParams, X: np.ndarray, activation: str, head: np.ndarray | None = None) -> np.ndarray:
    """grad_x f(x) for every input x of X (n, d), f(x) = head^T phi(x) (head: mean_head by default): (n, d).

    With z_1 = W1 x + b1, z_i = W_i act(z_{i-1}) + b_i and D_i = diag(act'(z_i)), the chain rule gives
        two layers:    grad_x f = W1^T D1 w
        three layers:  grad_x f = W1^T D1 W2^T D2 w,   and so on for more.
    Batched over inputs (rows): S_i = act'(Z_i) (n, units of layer i), the upstream gradient
    U = w, then U = (S_i * U) W_i from the last layer to the first: G = U (n, d).
    """
    w = mean_head(params) if head is None else head
    slopes, h = [], X
    layers = body_layers(params.body())
    for W, b in layers:
        z = h @ W.T + (0.0 if b is None else b)
        slopes.append(_slope(z, activation))
        h = activate(z, activation)
    upstream = np.broadcast_to(w, (X.shape[0], w.shape[0]))         # d f / d phi, (n, width)
    for (W, _), S in zip(reversed(layers), reversed(slopes)):
        upstream = (S * upstream) @ W                                # d f / d (layer input)
    return upstream


def grad_perp_share(G: np.ndarray, B_star: np.ndarray) -> float:
    """E ||P_perp g||^2 / E ||g||^2 over the rows g of G (n, d), P_perp = I - B* B*^T: the share of
    the input-gradient energy outside span(B*) (NaN when every gradient is zero: a constant function)."""
    perp = G - (G @ B_star) @ B_star.T
    total = float((G * G).sum())
    return float((perp * perp).sum()) / total if total > 0 else float("nan")


def track(params: MLPParams, problem, X_probe: np.ndarray, activation: str) -> dict:
    """Keys: align_norm, sigma_min, perp_norm, perp_ratio, grad_perp_share, singular_values (of W1),
    phi_eigenvalues, effective_rank, r2; for a family that tracks its span (metarep.families) instead of B*:
    singular_values, phi_eigenvalues, effective_rank, r2 (of the true features) and span_outside."""
    family = family_of(problem)
    if family.tracks_span:
        return span_track(params, problem, X_probe, activation, family)
    B = params.W1.T
    align = metrics.align_singular_values(B, problem.B_star)
    perp = float(metrics.perp_norm(B, problem.B_star))
    return {
        "align_norm": float(align[0]),
        "sigma_min": float(align[-1]) if B.shape[1] >= problem.k else 0.0,
        "perp_norm": perp,
        "perp_ratio": perp / float(align[0]) if align[0] > 0 else float("inf"),
        "grad_perp_share": grad_perp_share(input_gradients(params, X_probe, activation), problem.B_star),
        "singular_values": np.linalg.svd(params.W1, compute_uv=False),
        **representation(params, X_probe, problem, activation),
    }


def span_track(params: MLPParams, truth, X_probe: np.ndarray, activation: str, family) -> dict:
    """phi's covariance spectrum and effective rank on the probe inputs (the family's grid), the R^2
    of the true features phi*(x) from phi(x) (1: phi keeps the true span), and span_outside: the
    share of phi's energy there outside the family's true span (families.measures.span_outside)."""
    Phi = features(X_probe, params.body(), activation)
    ev = np.linalg.eigvalsh(np.cov(Phi, rowvar=False).reshape(Phi.shape[1], Phi.shape[1]))[::-1]
    return {"singular_values": np.linalg.svd(params.W1, compute_uv=False), "phi_eigenvalues": ev,
            "effective_rank": effective_rank(ev), "r2": linear_r2(Phi, truth.teacher_features(X_probe)),
            "span_outside": span_outside(Phi, family.span(truth, X_probe))}
