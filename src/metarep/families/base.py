"""What a task family declares (`Family`), and the registry read by the rest of the code."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from metarep.families.tasks import Tasks


class NoOptions(BaseModel):
    """A family with no [problem] keys besides the shared ones."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Family:
    """A task family: plain functions of its ground truth `truth` and a declaration.

    make(problem, rng) -> truth
        the ground truth from the validated [problem] table (shared keys, and `options`: this
        family's own keys) and the problem.seed stream;
    sample_tasks(truth, n_tasks, m_in, m_out, rng) -> Tasks
        n fresh tasks (w_star: their true heads on `teacher_features`);
    sample_inputs(truth, n, rng) -> X (n, d)
        inputs as the tasks draw them (the test risk's moments are taken over them);
    probe(truth, n, rng) -> X (n', d)
        the inputs the representation is measured on while training;
    span(truth, X) -> (n, r)
        a basis, evaluated at X, of the functions the true features span (with the constant
        where a bias makes it free); None where the family has no known span;
    oracle(truth, X, y) -> heads (T, k)
        the best head on the true features `truth.teacher_features(X)` (T, m, k);
    test_measures(truth, params, *, activation, adapt_body, alpha, rng) -> dict
        the family's own object of the test section (None: it has none);
    arrays(truth) -> dict of arrays saved with the results (params.npz; `*_star` names are
        metarep.GroundTruth's B_star, mu_star and Sigma_star, all three or none).

    Declaration: Options, its own [problem] keys; fixed, shared keys whose value it sets (given
    otherwise: refused); defaults, shared keys' values when left out; foreign, shared keys it
    does not read (given: refused); archs, the `model.arch` values it runs on; oracle_network,
    whether the mlp `oracle` method (the teacher's network) can represent its true features;
    tracks_span, whether a network's training rows measure its features against `span`
    (span_outside, nonlinear.metrics) instead of the first layer against B*.
    """

    name: str
    summary: str
    make: Callable[..., Any]
    sample_tasks: Callable[..., Tasks]
    sample_inputs: Callable[..., np.ndarray]
    probe: Callable[..., np.ndarray]
    arrays: Callable[[Any], dict]
    Options: type[BaseModel] = NoOptions
    span: Callable[..., np.ndarray] | None = None
    oracle: Callable[..., np.ndarray] | None = None
    test_measures: Callable[..., dict] | None = None
    fixed: dict[str, Any] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)
    foreign: tuple[str, ...] = ()
    archs: tuple[str, ...] = ("linear", "mlp")
    oracle_network: bool = True
    tracks_span: bool = False

    def table(self, data: dict) -> dict:
        """A [problem] table with this family's fixed and default shared keys filled in; a fixed
        key with another value or a foreign key is refused (ValueError, one line)."""
        for key in self.foreign:
            if key in data:
                raise ValueError(f"problem.{key} is not a key of family {self.name!r} (it does not read it)")
        for key, value in self.fixed.items():
            if key in data and data[key] != value:
                raise ValueError(f"problem.{key} must be {value} for family {self.name!r}, got {data[key]!r}")
        return {**self.fixed, **self.defaults, **data}

    def check(self, arch: str, *, needs_truth: bool) -> None:
        """Refuse what this family cannot run (ValueError, one line)."""
        if arch not in self.archs:
            raise ValueError(f"problem.family = {self.name!r} runs on model.arch = "
                             f"{' or '.join(map(repr, self.archs))}, not {arch!r}")
        if needs_truth and not self.oracle_network:
            raise ValueError(f"method 'oracle' cannot draw the true features of family {self.name!r} as a "
                             f"network: every run's test.family holds this family's oracle")


_FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    _FAMILIES[family.name] = family
    return family


def registered() -> tuple[str, ...]:
    return tuple(_FAMILIES)


def get_family(name: str) -> Family:
    try:
        return _FAMILIES[name]
    except KeyError:
        raise ValueError(f"problem.family must be one of {', '.join(_FAMILIES)}, got {name!r}") from None


def family_of(truth) -> Family:
    """The family of a ground truth (its `family` attribute; the Gaussian model's Problem has none)."""
    return get_family(getattr(truth, "family", "gaussian"))


def sample_tasks(truth, n_tasks: int, m_in: int, m_out: int, rng: np.random.Generator) -> Tasks:
    return family_of(truth).sample_tasks(truth, n_tasks, m_in, m_out, rng)


def sample_inputs(truth, n: int, rng: np.random.Generator) -> np.ndarray:
    return family_of(truth).sample_inputs(truth, n, rng)


def probe_inputs(truth, n: int, rng: np.random.Generator) -> np.ndarray:
    return family_of(truth).probe(truth, n, rng)


def truth_arrays(truth) -> dict:
    return family_of(truth).arrays(truth)
