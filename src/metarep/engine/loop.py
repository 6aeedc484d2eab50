"""The one training loop: every run, batch, sweep point, reproduction and study goes through it."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import replace

import numpy as np

from metarep.engine.protocol import Steps
from metarep.engine.state import LOSS_NOT_FINITE, TrainState, params_message, params_runaway

# What the loop treats as the numbers having run away: a linear-algebra routine that fails on
# huge or non-finite input, or floating-point trouble raised as an exception.
NUMERICAL_FAILURES = (np.linalg.LinAlgError, FloatingPointError, OverflowError)
FLOAT_MAX = float(np.finfo(np.float64).max)


def _never() -> bool:
    return False


def train(exp: Steps, state: TrainState, *, points: Iterable[int] | None = None,
          on_progress: Callable[[int], None] | None = None,
          on_checkpoint: Callable[[TrainState], None] | None = None,
          should_stop: Callable[[], bool] = _never, checkpoint_seconds: float | None = None) -> TrainState:
    """Run outer steps until train.steps, divergence of every run, or should_stop() (then status
    'interrupted').

    Logs a metrics row at the steps in `points`, or every train.log_every steps, and at the end;
    calls on_checkpoint every train.checkpoint_every steps and, with `checkpoint_seconds`, whenever
    that much wall time has passed since the last call (when checkpoints happen never changes the
    results).

    Divergence (status 'diverged', with the step), per run: a non-finite loss, parameters that are
    non-finite or exceed train.diverge_threshold, or a numerical routine failing on run-away values.
    """
    t = exp.config.train
    at = set(points) if points is not None else None
    logged = (lambda step: step in at) if at is not None else (lambda step: step % t.log_every == 0)
    with np.errstate(all="ignore"), exp.compute():
        try:
            if not exp.method.iterative:
                return _direct(exp, state)
            return _steps(exp, state, logged, on_progress, on_checkpoint, should_stop, checkpoint_seconds)
        except NUMERICAL_FAILURES as err:
            for i, run in state.running():
                run.diverge(state.step, f"a numerical routine failed ({err})", exp.divergence_advice(run, i))
            return _settle(state)


def _steps(exp, state, logged, on_progress, on_checkpoint, should_stop, checkpoint_seconds) -> TrainState:
    """The outer steps, with the parameters and the optimizer state where the experiment trains
    them (`to_device`); they come back to NumPy only for a metrics row, a checkpoint and the end."""
    rng = _restore_rng(state)
    if state.opt_state is None:
        state.opt_state = exp.optimizer.init(state.params)
    state.params, state.opt_state = exp.to_device(state.params), exp.to_device(state.opt_state)
    try:
        loss = _on_device(exp, state, rng, logged, on_progress, on_checkpoint, should_stop, checkpoint_seconds)
    finally:
        state.params, state.opt_state = exp.to_host(state.params), exp.to_host(state.opt_state)
    if loss is not None:
        _finish(exp, state, loss)
    return _settle(state)


def _on_device(exp, state, rng, logged, on_progress, on_checkpoint, should_stop, checkpoint_seconds):
    """Steps until train.steps (returns the loss at the final parameters), an interruption or the
    divergence of every run (returns None)."""
    t, opt = exp.config.train, exp.optimizer
    last_checkpoint = time.monotonic()
    while state.step < t.steps:
        if should_stop():
            state.status = "interrupted"
            _store_rng(state, rng)
            return None
        at, grads, loss = exp.gradient(state.params, rng)
        if logged(state.step):
            _record(exp, state, exp.to_host(state.params), loss)
        updates, opt_state = opt.update(grads, state.opt_state, at)
        new_params = opt.apply_updates(at, updates)
        _check(exp, state, new_params, loss)
        if not state.running():
            return None
        state.params, state.opt_state, state.step = new_params, opt_state, state.step + 1
        if on_progress:
            on_progress(state.step)
        if on_checkpoint and ((t.checkpoint_every and state.step % t.checkpoint_every == 0) or (
                checkpoint_seconds is not None and time.monotonic() - last_checkpoint >= checkpoint_seconds)):
            _store_rng(state, rng)
            on_checkpoint(replace(state, params=exp.to_host(state.params), opt_state=exp.to_host(state.opt_state)))
            last_checkpoint = time.monotonic()
    _store_rng(state, rng)
    return exp.gradient(state.params, rng)[2]


def _direct(exp, state: TrainState) -> TrainState:
    """A direct method: its fit is the result (diverged if it is not finite)."""
    if params_runaway(state.params, FLOAT_MAX):
        state.diverge(state.step, "the fitted parameters are not finite", exp.divergence_advice(state, 0))
        return state
    _finish(exp, state, float("nan"), loss_counts=False)
    return _settle(state)


def _of(values, i: int, runs: int | None):
    return float(values) if runs is None else float(np.asarray(values)[i])


def _record(exp, state: TrainState, params, loss) -> None:
    rows = exp.measure(params, state.step, loss)
    for i, run in state.running():
        run.history.append(rows if exp.runs is None else rows[i])


def _check(exp, state: TrainState, new_params, loss) -> None:
    """The one divergence rule, applied to every run still going."""
    threshold = np.asarray(exp.config.train.diverge_threshold if exp.runs is None else exp.thresholds)
    blown = np.atleast_1d(params_runaway(new_params, threshold if exp.runs is None else threshold[:, None],
                                         exp.runs))
    bad_loss = ~np.isfinite(np.atleast_1d(np.asarray(loss, dtype=float)))
    for i, run in state.running():
        run.step = state.step
        if bad_loss[i]:
            run.diverge(state.step, LOSS_NOT_FINITE, exp.divergence_advice(run, i))
        elif blown[i]:
            limit = float(threshold if exp.runs is None else threshold[i])
            run.diverge(state.step + 1, params_message(limit), exp.divergence_advice(run, i))


def _finish(exp, state: TrainState, loss, *, loss_counts: bool = True) -> None:
    """The last row (when not logged already); then every run still going is 'completed', or
    diverged when its loss at the final parameters is not finite."""
    running = state.running()
    if any(not run.history or run.history[-1]["step"] != state.step for _, run in running):
        rows = exp.measure(state.params, state.step, loss)
        for i, run in running:
            if not run.history or run.history[-1]["step"] != state.step:
                run.history.append(rows if exp.runs is None else rows[i])
    for i, run in running:
        run.status = "completed"
        if loss_counts and not math.isfinite(_of(loss, i, exp.runs)):
            run.diverge(state.step, LOSS_NOT_FINITE, exp.divergence_advice(run, i))


def _settle(state: TrainState) -> TrainState:
    """A batch is completed once none of its runs is still going (each keeps its own status)."""
    if state.members is not None and not state.running():
        state.status = "completed"
    return state


def _restore_rng(state: TrainState) -> np.random.Generator | None:
    if state.rng_state is None:
        return None
    rng = np.random.default_rng()
    rng.bit_generator.state = state.rng_state
    return rng


def _store_rng(state: TrainState, rng) -> None:
    if rng is not None:
        state.rng_state = rng.bit_generator.state
