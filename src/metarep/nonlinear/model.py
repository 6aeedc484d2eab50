"""The multi-layer network f(x) = w^T phi(x) as plain data (NumPy), and its forward pass.

    layers = 2:  phi(x) = act(W1 x + b1)                      W1 (width, d)
    layers = 3:  phi(x) = act(W2 act(W1 x + b1) + b2)         W1 (hidden, d), W2 (width, hidden)
    layers = L:  h_1 = act(W1 x + b1), h_i = act(W_i h_{i-1} + b_i), phi(x) = h_{L-1}
                 W1 (hidden, d), W2 ... W_{L-2} (hidden, hidden), W_{L-1} (width, hidden)

act is relu or the identity; the biases are optional. With layers = 2, the identity and no
bias, f(x) = x^T B w with B = W1^T: the linear model of MATH 2. The forward pass is written once
for NumPy arrays and torch tensors alike (only `@`, `+`, `reshape` and the activation), so the
training code (torch) and the metrics and test-time code (NumPy) evaluate the same function.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

ACTIVATIONS = ("relu", "identity")
_NAME = re.compile(r"([Wb])([1-9][0-9]*)")


def body_names(pairs: int) -> tuple[str, ...]:
    """W1, b1, ..., W{pairs}, b{pairs}."""
    return tuple(f"{p}{i}" for i in range(1, pairs + 1) for p in "Wb")


def _pairs(body_keys) -> int:
    """Layer pairs (W_i, b_i) a network with these body names is stored with: at least two."""
    return max([2, *(int(m[2]) for m in map(_NAME.fullmatch, body_keys) if m)])


class MLPParams(tuple):
    """W1 (n1, d); b1 (n1,); W2; b2; ...; W{n}, b{n}; w (width,) the shared head, or (N, width)
    one head per training task (multi-task learning), n = max(layers - 1, 2). An absent layer or
    bias is an empty array (shape (0,)), so every field is an array: saved by name, loaded with
    MLPParams(**arrays). A tuple with the NamedTuple interface (_fields, _make, _replace, _asdict)
    whose fields follow from its length, so that every depth is the one type."""

    __slots__ = ()

    def __new__(cls, *arrays, **named):
        fields = body_names(max(2, (len(arrays) + len(named) - 1) // 2)) + ("w",)
        rest = fields[len(arrays):]
        if (len(arrays) + len(named)) % 2 == 0 or set(named) != set(rest):
            raise TypeError(f"MLPParams takes the fields W1, b1, ..., W_n, b_n (n >= 2), w; got "
                            f"{len(arrays)} positional and {sorted(named)}")
        return super().__new__(cls, (*arrays, *(named[f] for f in rest)))

    def __getnewargs__(self):
        return tuple(self)

    def __getattr__(self, name: str) -> Any:
        fields = self._fields
        if name in fields:
            return self[fields.index(name)]
        raise AttributeError(name)

    def __repr__(self) -> str:
        return "MLPParams(" + ", ".join(f"{f}={a!r}" for f, a in zip(self._fields, self)) + ")"

    @property
    def _fields(self) -> tuple[str, ...]:
        return body_names((len(self) - 1) // 2) + ("w",)

    @classmethod
    def _make(cls, iterable) -> MLPParams:
        return cls(*iterable)

    def _replace(self, **changes) -> MLPParams:
        unknown = set(changes) - set(self._fields)
        if unknown:
            raise ValueError(f"MLPParams has no fields {sorted(unknown)}")
        return type(self)(*(changes.get(f, a) for f, a in zip(self._fields, self)))

    def _asdict(self) -> dict[str, Any]:
        return dict(zip(self._fields, self))

    @property
    def w(self) -> Any:
        return self[-1]

    def is_finite(self) -> bool:
        return all(bool(np.isfinite(a).all()) for a in self)

    def max_abs(self) -> float:
        return float(max(np.abs(a).max(initial=0.0) for a in self))

    @property
    def layers(self) -> int:
        return 1 + sum(1 for a in self[:-1:2] if a.shape[0])

    @property
    def width(self) -> int:
        return self.w.shape[-1]

    def body(self) -> dict[str, Any]:
        """The present body arrays by name (the absent ones left out)."""
        return {name: a for name, a in zip(self._fields[:-1], self[:-1]) if a.shape[0]}   # NumPy arrays or tensors

    @classmethod
    def from_parts(cls, body: dict, w) -> MLPParams:
        """From the present body arrays (any array type) and a head; absent fields empty."""
        empty = np.zeros(0, dtype=np.asarray(w).dtype)
        return cls(*(body.get(name, empty) for name in body_names(_pairs(body))), w)


@dataclass(frozen=True)
class MLPSpec:
    """The architecture: input dimension d, head width k', layers (>= 2), hidden units n1 of every
    layer but the last when layers >= 3, activation ("relu" or "identity"), biases or not."""

    d: int
    width: int
    layers: int = 2
    hidden: int | None = None
    activation: str = "relu"
    bias: bool = False

    def __post_init__(self):
        if not (self.layers >= 2 and int(self.layers) == self.layers):
            raise ValueError(f"model.layers must be an integer >= 2, got {self.layers}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"model.activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}")

    @property
    def n1(self) -> int:
        """Units of the first layer: the width for two layers, `hidden` (default d) for more."""
        return self.width if self.layers == 2 else (self.hidden or self.d)

    def shapes(self) -> list[tuple[int, int]]:
        """(units out, units in) of W1, ..., W{layers-1}."""
        units = [self.d, *[self.n1] * (self.layers - 2), self.width]
        return list(zip(units[1:], units[:-1]))


def init_mlp_params(spec: MLPSpec, *, init_scale: float, init_head_scale: float,
                    rng: np.random.Generator) -> MLPParams:
    """W1 = B0^T with B0 entries N(0, init_scale^2 / d), drawn exactly as `params.init_params`
    draws B (so identity activation starts where the linear model starts); W2, ..., W{layers-1}
    entries N(0, init_scale^2 / fan-in), in that order; w entries N(0, init_head_scale^2 / width);
    biases 0. For layers = 2 the draws are init_params's, in its order."""
    (n1, d), *deeper = spec.shapes()
    B0 = rng.standard_normal((d, n1)) * (init_scale / np.sqrt(d))
    Ws = [np.ascontiguousarray(B0.T)]
    Ws += [rng.standard_normal((n, m)) * (init_scale / np.sqrt(m)) for n, m in deeper]
    w = rng.standard_normal(spec.width) * (init_head_scale / np.sqrt(spec.width))
    arrays = [a for W in Ws for a in (W, np.zeros(W.shape[0] if spec.bias else 0))]
    if spec.layers == 2:                                          # W2, b2 stored as empty arrays
        arrays += [np.zeros(0), np.zeros(0)]
    return MLPParams(*arrays, w)


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


def body_layers(body: dict) -> list[tuple[Any, Any | None]]:
    """[(W1, b1 or None), (W2, b2 or None), ...] of the present layers, first to last."""
    return [(body[f"W{i}"], body.get(f"b{i}")) for i in range(1, _pairs(body) + 1) if f"W{i}" in body]


def features(X: Any, body: dict, activation: str) -> Any:
    """phi(X) for inputs X (..., d) and the body arrays {W1, [b1], W2, [b2], ...}: (..., width)."""
    h = X
    for W, b in body_layers(body):
        h = activate(_dense(h, W, b), activation)
    return h
