"""summary.json: how a run ended, its final metrics, the theory's numbers, the test section."""

from __future__ import annotations

import math

import numpy as np

from metarep.engine.loop import NUMERICAL_FAILURES
from metarep.engine.state import TrainState
from metarep.linear import metrics
from metarep.running.advice import words

RANK_REL_TOL = 1e-2


def run_summary(exp, state: TrainState, test: dict | None) -> dict:
    """The run's summary.json content (every key documented in README.md, 'Results')."""
    last = state.history[-1] if state.history else _last_row(exp, state)
    sv = [last[k] for k in last if k.startswith("sv_")]
    final = {k: v for k, v in last.items() if k != "step" and not k.startswith("sv_")}
    out = {
        "status": state.status,
        "steps": state.step,
        "diverged_step": state.diverged_step,
        "message": state.message,
        "method": exp.method.name,
        "arch": exp.config.model.arch,
        "regime": exp.regime,
        "final": {**final, "singular_values": sv,
                  "rank": int(metrics.numerical_rank(np.array(sv), RANK_REL_TOL)) if sv else 0,
                  "rank_rel_tol": RANK_REL_TOL},
    }
    theory = exp.theory()
    if theory is not None:
        out["theory"] = theory
    out["test"] = test
    return out


def _last_row(exp, state: TrainState) -> dict:
    """The metrics of the final parameters, NaN where they cannot be computed (a run that failed
    numerically before its first logged row)."""
    with np.errstate(all="ignore"), exp.compute():
        try:
            return exp.measure(state.params, state.step, float("nan"))
        except NUMERICAL_FAILURES:
            return {"step": state.step, "loss": float("nan")}


def evaluate_final(exp, state: TrainState, *, on_chunk=None, should_stop=None) -> dict | None:
    """The test section for a completed run, None for any other. When test-time adaptation runs
    away (a non-finite excess risk or error), the run is marked diverged at its last step instead.
    on_chunk(done, total) is called after each chunk of tasks scored; should_stop() is asked
    before each chunk and stops the evaluation with KeyboardInterrupt when it says so."""
    if state.status != "completed":
        return None
    hooks = {k: v for k, v in (("on_chunk", on_chunk), ("should_stop", should_stop)) if v is not None}
    with np.errstate(all="ignore"), exp.compute():
        try:
            test = exp.evaluate(state.params, **hooks)
            score = test.get("excess_risk", test.get("mse"))
            if score is not None and math.isfinite(score):
                return test
            what = "the test score is not finite"
        except NUMERICAL_FAILURES as err:
            what = f"a numerical routine failed ({err})"
    te = exp.config.test
    state.status, state.diverged_step = "diverged", state.step
    state.message = (f"diverged at test time after step {state.step} ({te.tasks} test tasks): {what}; "
                     f"{words(exp.test_advice())}")
    return None
