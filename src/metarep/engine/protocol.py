"""What the training loop asks of an experiment: the seam between the one loop and a model,
a method and a source of tasks."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from metarep.engine.state import TrainState

#: What a diverged run should lower (Advice.code): the setting named, with its value.
LOWER_ALPHA = "train.alpha"          # the inner step, or model.init_scale
LOWER_BETA = "train.beta"            # the outer step
LOWER_TEST_ALPHA = "test.alpha"      # the test-time step, or test.adapt_steps
NARROW_TUNING = "test.tune"          # the tuning grid of test.adapt = "tuned" (no value)


@dataclass(frozen=True)
class Advice:
    """Which setting to lower after a divergence: a code (LOWER_*) and the setting's value. The
    words are the outer layer's (metarep.running.advice.words)."""

    code: str
    value: float | None = None


class Steps(Protocol):
    """What the one training loop calls.

    runs: None for one run; S when the parameters carry a leading axis of S runs advanced
    together (each with its own divergence and its own `thresholds`), as the batched population
    runs do.
    """

    @property
    def config(self) -> Any: ...

    @property
    def method(self) -> Any: ...

    @property
    def runs(self) -> int | None: ...

    @property
    def optimizer(self) -> Any:
        """The outer optimizer (`metarep.optimizers.Optimizer`) the loop applies to the gradients."""
        ...

    def gradient(self, params, rng: np.random.Generator | None) -> tuple[Any, Any, Any]:
        """(the point the update starts from: `params`, or a method's closed-form move of part of
        them; the outer gradient there; the loss, one per run for a batch)."""
        ...

    def to_device(self, tree) -> Any:
        """Parameters or optimizer state (NumPy) where the steps run (the identity for NumPy models)."""
        ...

    def to_host(self, tree) -> Any:
        """The inverse of `to_device`: NumPy arrays, for metrics, checkpoints and results."""
        ...

    def measure(self, params, step: int, loss) -> Any:
        """One metrics row (a dict of floats with `step` and `loss`; a list of rows for a batch)."""
        ...

    def divergence_advice(self, state: TrainState, run: int | None = None) -> Advice:
        """Which setting to lower, said after 'diverged at step t: ...'."""
        ...

    def compute(self) -> AbstractContextManager:
        """The context the steps run in (thread pools, devices)."""
        ...


class Experiment(Steps, Protocol):
    """Everything fixed by a config: the loop's steps, and what a run starts from and ends with."""

    @property
    def regime(self) -> str: ...

    def initial_state(self) -> TrainState:
        """Parameters at step 0 (a direct method's fit), and the online stream's RNG state."""
        ...

    def evaluate(self, params) -> dict:
        """The test section of the summary (test-time adaptation on new or held-out tasks)."""
        ...

    def theory(self) -> dict | None:
        """The theory's numbers for summary.json (None: the key is left out)."""
        ...

    def test_advice(self) -> Advice:
        """Which setting to lower when test-time adaptation runs away."""
        ...

    def arrays(self, params) -> dict[str, np.ndarray]:
        """What params.npz holds: the learned arrays and, where known, the ground truth."""
        ...
