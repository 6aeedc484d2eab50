"""What a run needs to continue, and the one rule for when a run has diverged."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from metarep.engine.protocol import Advice


@dataclass
class TrainState:
    """Parameters (a NamedTuple of arrays), the step, the metric rows, the task stream's RNG state,
    how the run stands (status 'running', 'completed', 'diverged' or 'interrupted') and the outer
    optimizer's state (`metarep.optimizers`; None: not started). Outside the training loop the
    arrays are NumPy arrays; within it they live where the experiment trains them."""

    params: Any
    step: int = 0
    history: list[dict] = field(default_factory=list)
    rng_state: dict | None = None
    status: str = "running"
    diverged_step: int | None = None
    message: str = ""
    members: list[TrainState] | None = None
    opt_state: dict | None = None

    def runs(self) -> list[TrainState]:
        """The runs this state tracks: itself, or the members of a batch (each with its own
        history and status; their parameters are filled in when the batch is split)."""
        return self.members if self.members is not None else [self]

    def running(self) -> list[tuple[int, TrainState]]:
        return [(i, run) for i, run in enumerate(self.runs()) if run.status == "running"]

    def diverge(self, step: int, what: str, advice: Advice) -> TrainState:
        """Mark the run diverged at `step`: the one message every run, batch and study prints
        (the advice in the outer layer's words, metarep.running.advice)."""
        self.status, self.diverged_step = "diverged", step
        from metarep.running.advice import words  # the outer layer's words; imported here: it imports the engine

        self.message = f"diverged at step {step}: {what}; {words(advice)}"
        return self


LOSS_NOT_FINITE = "the loss became non-finite"


def params_runaway(params, threshold: float | np.ndarray, runs: int | None = None) -> np.ndarray:
    """Whether the parameters are non-finite or exceed `threshold` in absolute value: a bool, or
    one per run along the leading axis when `runs` is given."""
    shape = (1 if runs is None else runs, -1)
    bad = np.zeros(shape[0], dtype=bool)
    for a in params:
        if hasattr(a, "detach"):   # a torch tensor: compared where it lives, one flag per run comes back
            bad |= ~(a.detach().abs().reshape(shape) <= float(threshold)).all(dim=1).cpu().numpy()
            continue
        flat = np.abs(np.asarray(a)).reshape(shape)
        bad |= ~(flat <= threshold).all(axis=1)      # NaN fails the comparison too
    return bad if runs is not None else bad[0]


def params_message(threshold: float) -> str:
    return f"the parameters became non-finite or exceeded {threshold:g}"
