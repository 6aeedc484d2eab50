"""The multi-layer network f(x) = w^T phi(x) as plain data (NumPy), and its forward pass.

    layers = 2:  phi(x) = act(W1 x + b1)                      W1 (width, d)
    layers = 3:  phi(x) = act(W2 act(W1 x + b1) + b2)         W1 (hidden, d), W2 (width, hidden)

act is relu or the identity; the biases are optional. With layers = 2, the identity and no
bias, f(x) = x^T B w with B = W1^T: the linear model of MATH 2. The forward pass is written once
for NumPy arrays and torch tensors alike (only `@`, `+`, `reshape` and the activation), so the
training code (torch) and the metrics and test-time code (NumPy) evaluate the same function.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

ACTIVATIONS = ("relu", "identity")
BODY = ("W1", "b1", "W2", "b2")


class MLPParams(NamedTuple):
    """W1 (n1, d); b1 (n1,); W2 (width, n1); b2 (width,); w (width,) the shared head, or (N, width)
    one head per training task (multi-task learning). An absent layer or bias is an empty array
    (shape (0,)), so every field is an array: saved by name, loaded with MLPParams(**arrays)."""

    W1: np.ndarray
    b1: np.ndarray
    W2: np.ndarray
    b2: np.ndarray
    w: np.ndarray

    def is_finite(self) -> bool:
        return all(bool(np.isfinite(a).all()) for a in self)

    def max_abs(self) -> float:
        return float(max(np.abs(a).max(initial=0.0) for a in self))

    @property
    def layers(self) -> int:
        return 3 if self.W2.shape[0] else 2

    @property
    def width(self) -> int:
        return self.w.shape[-1]

    def body(self) -> dict[str, np.ndarray]:
        """The present body arrays by name (the absent ones left out)."""
        return {name: a for name, a in zip(BODY, self[:4]) if a.shape[0]}   # NumPy arrays or tensors

    @classmethod
    def from_parts(cls, body: dict, w) -> MLPParams:
        """From the present body arrays (any array type) and a head; absent fields empty."""
        empty = np.zeros(0, dtype=np.asarray(w).dtype)
        W1, b1, W2, b2 = (body.get(name, empty) for name in BODY)
        return cls(W1, b1, W2, b2, w)


@dataclass(frozen=True)
class MLPSpec:
    """The architecture: input dimension d, head width k', layers (2 or 3), hidden units n1 of the
    first layer when layers = 3, activation ("relu" or "identity"), biases or not."""

    d: int
    width: int
    layers: int = 2
    hidden: int | None = None
    activation: str = "relu"
    bias: bool = False

    def __post_init__(self):
        if self.layers not in (2, 3):
            raise ValueError(f"model.layers must be 2 or 3, got {self.layers}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"model.activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}")

    @property
    def n1(self) -> int:
        """Units of the first layer: the width for two layers, `hidden` (default d) for three."""
        return self.width if self.layers == 2 else (self.hidden or self.d)


def init_mlp_params(spec: MLPSpec, *, init_scale: float, init_head_scale: float,
                    rng: np.random.Generator) -> MLPParams:
    """W1 = B0^T with B0 entries N(0, init_scale^2 / d), drawn exactly as `params.init_params`
    draws B (so identity activation starts where the linear model starts); W2 entries
    N(0, init_scale^2 / n1) (scaled by its fan-in); w entries N(0, init_head_scale^2 / width);
    biases 0. For layers = 2 the draws are init_params's, in its order."""
    B0 = rng.standard_normal((spec.d, spec.n1)) * (init_scale / np.sqrt(spec.d))
    W2 = np.zeros(0)
    if spec.layers == 3:
        W2 = rng.standard_normal((spec.width, spec.n1)) * (init_scale / np.sqrt(spec.n1))
    w = rng.standard_normal(spec.width) * (init_head_scale / np.sqrt(spec.width))
    b1 = np.zeros(spec.n1 if spec.bias else 0)
    b2 = np.zeros(spec.width if spec.bias and spec.layers == 3 else 0)
    return MLPParams(np.ascontiguousarray(B0.T), b1, W2, b2, w)


def activate(z: Any, activation: str) -> Any:
    """act(z) for a NumPy array or a torch tensor."""
    if activation == "identity":
        return z
    if isinstance(z, np.ndarray):
        return np.maximum(z, 0.0)
    return z.relu()


def _dense(h: Any, W: Any, b: Any | None) -> Any:
    """h W^T (+ b) over the last axis of h (..., n_in): one matrix product for every leading axis."""
    out = (h.reshape(-1, h.shape[-1]) @ W.T).reshape(*h.shape[:-1], W.shape[0])
    return out if b is None else out + b


def features(X: Any, body: dict, activation: str) -> Any:
    """phi(X) for inputs X (..., d) and the body arrays {W1, [b1], [W2], [b2]}: (..., width)."""
    h = activate(_dense(X, body["W1"], body.get("b1")), activation)
    if "W2" in body:
        h = activate(_dense(h, body["W2"], body.get("b2")), activation)
    return h
