"""Transitional names for code written before metarep.engine (to be removed)."""

from __future__ import annotations

from metarep.engine import TrainState, build, evaluate_final, run, train
from metarep.engine.summary import run_summary as summary


def initial_state(exp):
    return exp.initial_state()


def advance(exp, state, rng):
    return exp.advance(state.params, rng)


def measure(exp, params, step, loss):
    return exp.measure(params, step, loss)


def evaluate(exp, params):
    return exp.evaluate(params)


__all__ = ["TrainState", "advance", "build", "evaluate", "evaluate_final", "initial_state", "measure", "run",
           "summary", "train"]
