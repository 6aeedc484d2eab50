"""The engine: one training loop over any experiment a config describes.

`build(config)` asks the configured architecture (metarep.models) for its experiment;
`train` is the one loop; `run` builds, trains and evaluates in memory.
"""

from __future__ import annotations

from metarep.engine.loop import NUMERICAL_FAILURES, train
from metarep.engine.protocol import Experiment
from metarep.engine.state import TrainState
from metarep.engine.summary import evaluate_final, run_summary
from metarep.models import get_arch


def build(config) -> Experiment:
    """The experiment of `config` (a validated metarep.Config)."""
    return get_arch(config.model.arch).module().build(config)


def run(config, **hooks) -> tuple[Experiment, TrainState, dict]:
    """Build, train and evaluate in memory: (experiment, final state, summary)."""
    exp = build(config)
    state = train(exp, exp.initial_state(), **hooks)
    test = evaluate_final(exp, state)
    return exp, state, run_summary(exp, state, test)


__all__ = ["NUMERICAL_FAILURES", "Experiment", "TrainState", "build", "evaluate_final", "run", "run_summary",
           "train"]
