"""`family = "sinusoid"`: the few-shot sinusoid regression of MAML (Finn, Abbeel and Levine 2017).

A task is y = a sin(x + phi) + noise, a ~ U[amplitude], phi ~ U[phase], x ~ U[input_range] (the
benchmark: [0.1, 5], [0, pi], [-5, 5], no noise). Since a sin(x + phi) = (a cos phi) sin x +
(a sin phi) cos x, every task is a linear head w* = a (cos phi, sin phi) on the two true features
phi*(x) = (sin x, cos x): the tasks share a k = 2 dimensional representation, and a network with
biases can also make the constant, so the true span is span{1, sin x, cos x}.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from metarep.families.base import Family, register_family
from metarep.families.network import adapt, forward, per_task
from metarep.families.tasks import Tasks

Finite = Annotated[float, Field(allow_inf_nan=False, strict=True)]
Range = Annotated[list[Finite], Field(min_length=2, max_length=2)]
# Test protocol: shots K, test-time gradient steps, query points per task (MSE against the
# noiseless function, the benchmark's score).
SHOTS = (5, 10, 20)
STEPS = (0, 1, 10)
QUERY = 100
GRID = 1000


class Options(BaseModel):
    """[problem] keys of family "sinusoid" (the shared noise_std is the label noise, default 0)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    amplitude: Range = [0.1, 5.0]
    """a ~ U[amplitude[0], amplitude[1]]"""
    phase: Range = [0.0, math.pi]
    """phi ~ U[phase[0], phase[1]]"""
    input_range: Range = [-5.0, 5.0]
    """x ~ U[input_range[0], input_range[1]]"""
    test_tasks: Annotated[int, Field(ge=1, strict=True)] = 1000
    """new tasks of the test.family object (MSE after 0, 1, 10 steps at K = 5, 10, 20)"""

    @field_validator("amplitude", "phase", "input_range")
    @classmethod
    def _ordered(cls, value, info):
        if not value[0] < value[1]:
            raise ValueError(f"must be [low, high] with low < high, got {value}")
        if info.field_name == "amplitude" and value[0] < 0:
            raise ValueError(f"must be >= 0, got {value}")
        return value


def uniform_trig_moments(lo: float, hi: float) -> tuple[float, float, float, float, float]:
    """E cos t, E sin t, E cos^2 t, E sin^2 t, E sin t cos t for t ~ U[lo, hi] (closed forms)."""
    L = hi - lo
    c = (math.sin(hi) - math.sin(lo)) / L
    s = (math.cos(lo) - math.cos(hi)) / L
    c2 = 0.5 + (math.sin(2 * hi) - math.sin(2 * lo)) / (4 * L)
    sc = (math.cos(2 * lo) - math.cos(2 * hi)) / (4 * L)
    return c, s, c2, 1.0 - c2, sc


@dataclass(frozen=True)
class Sinusoid:
    """The ground truth: the three ranges and the label noise sigma."""

    amplitude: tuple[float, float]
    phase: tuple[float, float]
    input_range: tuple[float, float]
    noise_std: float
    test_tasks: int = 1000
    family: ClassVar[str] = "sinusoid"
    d: ClassVar[int] = 1
    k: ClassVar[int] = 2
    teacher: ClassVar[str] = "sinusoid"

    def teacher_features(self, X: np.ndarray) -> np.ndarray:
        """(sin x, cos x) for inputs X (..., 1): (..., 2)."""
        x = X[..., 0]
        return np.stack([np.sin(x), np.cos(x)], axis=-1)

    @property
    def mu_star(self) -> np.ndarray:
        """E w* = E a (E cos phi, E sin phi)."""
        c, s, *_ = uniform_trig_moments(*self.phase)
        return 0.5 * sum(self.amplitude) * np.array([c, s])

    @property
    def Sigma_star(self) -> np.ndarray:
        """Cov w* = E a^2 E[(cos, sin)(cos, sin)^T] - mu* mu*^T."""
        lo, hi = self.amplitude
        _, _, c2, s2, sc = uniform_trig_moments(*self.phase)
        a2 = (lo * lo + lo * hi + hi * hi) / 3
        mu = self.mu_star
        return a2 * np.array([[c2, sc], [sc, s2]]) - np.outer(mu, mu)


def make(p, rng: np.random.Generator) -> Sinusoid:
    o = p.options
    return Sinusoid(tuple(o.amplitude), tuple(o.phase), tuple(o.input_range), float(p.noise_std), o.test_tasks)


def sample_inputs(truth: Sinusoid, n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(*truth.input_range, size=(n, 1))


def sample_tasks(truth: Sinusoid, n_tasks: int, m_in: int, m_out: int, rng: np.random.Generator) -> Tasks:
    """n tasks: a, phi, then the inner inputs and labels, then the outer ones (w_star (n, 2))."""
    a = rng.uniform(*truth.amplitude, size=n_tasks)
    phi = rng.uniform(*truth.phase, size=n_tasks)
    w_star = a[:, None] * np.stack([np.cos(phi), np.sin(phi)], axis=1)

    def samples(m):
        X = rng.uniform(*truth.input_range, size=(n_tasks, m, 1))
        clean = np.einsum("nmk,nk->nm", truth.teacher_features(X), w_star)
        return X, clean + truth.noise_std * rng.standard_normal(clean.shape)

    X_in, y_in = samples(m_in)
    X_out, y_out = samples(m_out)
    return Tasks(X_in=X_in, y_in=y_in, X_out=X_out, y_out=y_out, w_star=w_star)


def probe(truth: Sinusoid, n: int, rng: np.random.Generator) -> np.ndarray:
    """A fine grid of GRID points over the input range (uniform inputs: the grid's mean is their mean)."""
    return np.linspace(*truth.input_range, GRID)[:, None]


def span(truth: Sinusoid, X: np.ndarray) -> np.ndarray:
    """(1, sin x, cos x) at the inputs X (n, 1): (n, 3)."""
    return np.hstack([np.ones((X.shape[0], 1)), truth.teacher_features(X)])


def oracle(truth: Sinusoid, X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The best linear estimate of each task's head from its K points on the true features
    F = phi*(X): mu* + Sigma* F^T (F Sigma* F^T + sigma^2 I)^{-1} (y - F mu*), with the heads' true
    first two moments (the posterior mean were w* Gaussian). Without noise and K >= 2 distinct
    points it interpolates: the least-squares head, exact. (T, 2)."""
    F = truth.teacher_features(X)
    S, mu = truth.Sigma_star, truth.mu_star
    FS = F @ S
    K = FS @ np.swapaxes(F, 1, 2) + truth.noise_std ** 2 * np.eye(X.shape[1])
    # noiseless: K has rank 2 (singular for K > 2 points); its pseudo-inverse gives the exact head
    inv = np.linalg.pinv(K, hermitian=True) if truth.noise_std == 0 else np.linalg.inv(K)
    return mu + np.einsum("tmk,tm->tk", FS, np.einsum("tij,tj->ti", inv, y - F @ mu))


def _mse(values: np.ndarray) -> tuple[float, float]:
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(values.size))


def test_measures(truth: Sinusoid, params, *, activation: str, adapt_body: bool, alpha: float,
                  rng: np.random.Generator) -> dict:
    """The benchmark's test: on truth.test_tasks new tasks (from `rng`; the same for every method),
    each network adapted on the first K of its points by s gradient steps of size alpha (every
    layer when `adapt_body`, else the head), scored by the mean squared error against the noiseless
    function at QUERY new points; the oracle's head on the true features from the same K points.
    mse[K][s], oracle_mse[K] (and their standard errors over tasks)."""
    T = truth.test_tasks
    tasks = sample_tasks(truth, T, max(SHOTS), QUERY, rng)
    w_star = np.asarray(tasks.w_star)
    clean = np.einsum("tqk,tk->tq", truth.teacher_features(tasks.X_out), w_star)
    body = {name: np.asarray(a, dtype=np.float64) for name, a in params.body().items()}
    w = params.w if params.w.ndim == 1 else params.w.mean(axis=0)
    out: dict = {"tasks": T, "query_points": QUERY, "alpha": alpha, "adapts": "every layer" if adapt_body else "head",
                 "mse": {}, "mse_se": {}, "oracle_mse": {}, "oracle_mse_se": {}}
    for K in SHOTS:
        X, y = tasks.X_in[:, :K], tasks.y_in[:, :K]
        P, done = per_task(body, np.asarray(w, dtype=np.float64), T), 0
        scores, errors = {}, {}
        for s in STEPS:
            P = adapt(P, X, y, activation=activation, alpha=alpha, steps=s - done, body=adapt_body)
            done = s
            f, _ = forward(P, tasks.X_out, activation)
            scores[str(s)], errors[str(s)] = _mse(((f - clean) ** 2).mean(axis=1))
        out["mse"][str(K)], out["mse_se"][str(K)] = scores, errors
        heads = oracle(truth, X, y)
        diff = np.einsum("tqk,tk->tq", truth.teacher_features(tasks.X_out), heads - w_star)
        out["oracle_mse"][str(K)], out["oracle_mse_se"][str(K)] = _mse((diff ** 2).mean(axis=1))
    return out


def arrays(truth: Sinusoid) -> dict:
    """None: the three ranges and sigma (in the config) are the whole truth."""
    return {}


FAMILY = register_family(Family(
    name="sinusoid",
    summary="MAML's sinusoids: y = a sin(x + phi) + noise, a ~ U[0.1, 5], phi ~ U[0, pi], x ~ U[-5, 5]; "
            "true span {1, sin x, cos x}",
    make=make, sample_tasks=sample_tasks, sample_inputs=sample_inputs, probe=probe, arrays=arrays,
    Options=Options, span=span, oracle=oracle, test_measures=test_measures,
    fixed={"d": 1, "k": 2}, defaults={"noise_std": 0.0}, foreign=("task_mean", "task_cov", "teacher"),
    archs=("mlp",), oracle_network=False, tracks_span=True,
))
