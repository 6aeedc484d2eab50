"""The training loop: build an experiment from a config, advance it, measure, evaluate.

No file I/O here: the store layer persists what `train` hands to its callbacks.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from metarep import kernels, metrics, seeds
from metarep.adapt import expected_excess_risk_one_step, excess_risk, fit_heads, summarize
from metarep.config import Config
from metarep.methods import Method, get_method, outer_step, shared_head
from metarep.methods.base import chunked_gradient
from metarep.params import Params, init_params, sgd_update
from metarep.problem import Problem, make_problem, sample_tasks
from metarep.resources import TEST_CHUNK
from metarep.tasks import Tasks
from metarep.theory import lambda_star, lemma2_rate

METRIC_KEYS = ("loss", "align_norm", "sigma_min", "perp_norm", "mean_norm", "lambda_rel_err")


@dataclass(frozen=True)
class Experiment:
    """Everything fixed by the config: the problem, the method, the training tasks."""

    config: Config
    problem: Problem
    method: Method
    lam_star: np.ndarray
    hyper: dict
    tasks: Tasks | None

    @property
    def regime(self) -> str:
        t = self.config.train.tasks
        return "population" if t == "inf" else "online" if t == "online" else "finite"


@dataclass
class TrainState:
    """All that a run needs to continue: parameters, step, metric rows, the task stream's RNG state."""

    params: Params
    step: int = 0
    history: list[dict] = field(default_factory=list)
    rng_state: dict | None = None
    status: str = "running"
    diverged_step: int | None = None
    message: str = ""


def build(config: Config) -> Experiment:
    """Draw the problem and (for finite tasks) the training set from the config's seeds."""
    p, t = config.problem, config.train
    problem = make_problem(p.d, p.k, task_mean=p.task_mean, task_cov=p.task_cov, noise_std=p.noise_std,
                           rng=seeds.rng(p.seed, "problem"))
    method = get_method(t.method)
    tasks = None
    if t.tasks not in ("inf", "online"):
        tasks = sample_tasks(problem, t.tasks, t.m_in, t.m_out, seeds.rng(t.seed, "train_tasks"))
    m_in = float("inf") if t.m_in == "inf" else t.m_in
    lam = lambda_star(problem.Sigma_star, problem.noise_std, t.alpha, m_in)
    hyper = {name: getattr(t, name) for name in method.hyper}
    return Experiment(config, problem, method, lam, hyper, tasks)


def initial_state(exp: Experiment) -> TrainState:
    """B_0, w_0 from train.seed, or the direct estimate of a non-iterative method."""
    cfg = exp.config
    if exp.method.fit is not None:
        tasks = exp.tasks if exp.tasks is not None else _online_batch(exp, seeds.rng(cfg.train.seed, "train_tasks"))
        params = exp.method.fit(exp.problem, tasks, width=cfg.model.width, rng=seeds.rng(cfg.train.seed, "fit"))
        return TrainState(Params(*params))
    params = init_params(cfg.problem.d, cfg.model.width, init_scale=cfg.model.init_scale,
                         init_head_scale=cfg.model.init_head_scale, rng=seeds.rng(cfg.train.seed, "init"))
    if exp.method.init is not None:
        params = exp.method.init(params, exp.tasks if exp.tasks is not None else _online_batch(
            exp, seeds.rng(cfg.train.seed, "train_tasks")))
    rng_state = seeds.rng(cfg.train.seed, "online_tasks").bit_generator.state if exp.regime == "online" else None
    return TrainState(params, rng_state=rng_state)


def _online_batch(exp: Experiment, rng: np.random.Generator) -> Tasks:
    t = exp.config.train
    return sample_tasks(exp.problem, t.batch_tasks, t.m_in, t.m_out, rng)


def advance(exp: Experiment, state: TrainState, rng: np.random.Generator | None) -> tuple[Params, float]:
    """One outer step from state.params; returns the new parameters and the loss at the old ones."""
    t = exp.config.train
    if exp.regime == "population":
        grads, loss = exp.method.population_gradient(state.params, exp.problem, alpha=t.alpha,
                                                     m_in=float("inf") if t.m_in == "inf" else t.m_in)
        return sgd_update(state.params, grads, t.beta), float(loss)
    tasks = exp.tasks if exp.regime == "finite" else _online_batch(exp, rng)
    if t.chunk_tasks and exp.method.step is None and tasks.n_tasks > t.chunk_tasks:
        grads, loss = chunked_gradient(exp.method, state.params, tasks, chunk_tasks=t.chunk_tasks, **exp.hyper)
        return sgd_update(state.params, grads, t.beta), loss
    return outer_step(exp.method, state.params, tasks, beta=t.beta, **exp.hyper)


def measure(exp: Experiment, params: Params, step: int, loss: float) -> dict:
    """One metrics row: step, loss, the tracked norms and the singular values sv_0.. of B."""
    tracked = metrics.track(params, exp.problem, exp.lam_star)
    row = {"step": step, "loss": float(loss)}
    row.update({key: float(tracked[key]) for key in METRIC_KEYS[1:]})
    row.update({f"sv_{i}": float(s) for i, s in enumerate(tracked["singular_values"])})
    return row


def _blown_up(params: Params, threshold: float) -> bool:
    return not params.is_finite() or params.max_abs() > threshold


def _divergence_advice(exp: Experiment, state: TrainState) -> str:
    """The inner head step is unstable from the start when alpha ||B_0||_2^2 > 2; otherwise the
    outer step is too large."""
    t = exp.config.train
    sigma_0 = state.history[0]["sv_0"] if state.history else 0.0
    if "alpha" in exp.hyper and t.alpha * sigma_0 * sigma_0 > 2:
        return f"lower train.alpha (now {t.alpha}) or model.init_scale"
    return f"lower train.beta (now {t.beta})"


# What `train` treats as the numbers having run away: a linear-algebra routine that fails on
# huge or non-finite input, or floating-point trouble raised as an exception.
NUMERICAL_FAILURES = (np.linalg.LinAlgError, FloatingPointError, OverflowError)


def train(exp: Experiment, state: TrainState, *, on_progress: Callable[[int], None] | None = None,
          on_checkpoint: Callable[[TrainState], None] | None = None,
          should_stop: Callable[[], bool] = lambda: False,
          checkpoint_seconds: float | None = None) -> TrainState:
    """Run outer steps until train.steps, divergence, or should_stop() (then status 'interrupted').

    Logs a row every log_every steps and at the end; calls on_checkpoint every checkpoint_every steps
    and, with `checkpoint_seconds`, also whenever that much wall time has passed since the last call
    (when checkpoints happen never changes the results).

    Divergence (status 'diverged', with the step): parameters that are non-finite or exceed
    train.diverge_threshold, a non-finite loss, or a numerical routine failing on run-away values.
    """
    with np.errstate(all="ignore"), kernels.step_threads():
        try:
            return _train(exp, state, on_progress, on_checkpoint, should_stop, checkpoint_seconds)
        except NUMERICAL_FAILURES as err:
            return _diverged(exp, state, state.step, f"a numerical routine failed ({err})")


def _train(exp, state, on_progress, on_checkpoint, should_stop, checkpoint_seconds) -> TrainState:
    t = exp.config.train
    if not exp.method.iterative:
        if not state.params.is_finite():
            return _diverged(exp, state, state.step, "the fitted parameters are not finite")
        return _finish(exp, state, loss=float("nan"))
    rng = None
    if state.rng_state is not None:
        rng = np.random.default_rng()
        rng.bit_generator.state = state.rng_state
    last_checkpoint = time.monotonic()
    while state.step < t.steps:
        if should_stop():
            state.status = "interrupted"
            _store_rng(state, rng)
            return state
        new_params, loss = advance(exp, state, rng)
        if state.step % t.log_every == 0:
            state.history.append(measure(exp, state.params, state.step, loss))
        if not math.isfinite(loss):
            return _diverged(exp, state, state.step, "the loss became non-finite")
        if _blown_up(new_params, t.diverge_threshold):
            return _diverged(exp, state, state.step + 1, "the parameters became non-finite or exceeded "
                                                         f"{t.diverge_threshold:g}")
        state.params, state.step = new_params, state.step + 1
        if on_progress:
            on_progress(state.step)
        if on_checkpoint and ((t.checkpoint_every and state.step % t.checkpoint_every == 0) or (
                checkpoint_seconds is not None and time.monotonic() - last_checkpoint >= checkpoint_seconds)):
            _store_rng(state, rng)
            on_checkpoint(state)
            last_checkpoint = time.monotonic()
    _store_rng(state, rng)
    _, loss = advance(exp, state, rng)
    state = _finish(exp, state, loss)
    if not math.isfinite(loss):
        return _diverged(exp, state, state.step, "the loss became non-finite")
    return state


def _store_rng(state: TrainState, rng) -> None:
    if rng is not None:
        state.rng_state = rng.bit_generator.state


def _finish(exp: Experiment, state: TrainState, loss: float) -> TrainState:
    if not state.history or state.history[-1]["step"] != state.step:
        state.history.append(measure(exp, state.params, state.step, loss))
    state.status = "completed"
    return state


def _diverged(exp: Experiment, state: TrainState, step: int, what: str) -> TrainState:
    state.status = "diverged"
    state.diverged_step = step
    state.message = f"diverged at step {step}: {what}; {_divergence_advice(exp, state)}"
    return state


def evaluate_final(exp: Experiment, state: TrainState) -> dict | None:
    """`evaluate` for a completed run, None for any other. When test-time adaptation runs away
    (a non-finite excess risk), the run is marked diverged at its last step instead."""
    if state.status != "completed":
        return None
    with np.errstate(all="ignore"), kernels.step_threads():
        try:
            test = evaluate(exp, state.params)
            if math.isfinite(test["excess_risk"]):
                return test
            what = "the excess risk is not finite"
        except NUMERICAL_FAILURES as err:
            what = f"a numerical routine failed ({err})"
    te = exp.config.test
    advice = (f"lower test.alpha (now {exp.config.test_alpha}) or test.adapt_steps"
              if exp.config.adapt_rule == "gradient" else f"lower train.beta (now {exp.config.train.beta})")
    state.status = "diverged"
    state.diverged_step = state.step
    state.message = f"diverged at test time after step {state.step} ({te.tasks} test tasks): {what}; {advice}"
    return None


def evaluate(exp: Experiment, params: Params) -> dict:
    """Excess risk on test.tasks new tasks after test-time adaptation (MATH 6), mean and s.e.

    Test tasks depend only on the problem and test.seed, so every method meets the same tasks.
    """
    te, rule = exp.config.test, exp.config.adapt_rule
    B, w = params.B, shared_head(params)
    rng = seeds.rng(te.seed, "test_tasks")
    risks = []
    for start in range(0, te.tasks, TEST_CHUNK):
        n = min(TEST_CHUNK, te.tasks - start)
        tasks = sample_tasks(exp.problem, n, te.m_test, 0, rng)
        heads = fit_heads(rule, B, w, tasks.X_in, tasks.y_in, problem=exp.problem, alpha=exp.config.test_alpha,
                          steps=te.adapt_steps, ridge=te.ridge)
        risks.append(excess_risk(B, heads, exp.problem.B_star, tasks.w_star))
    mean, se = summarize(np.concatenate(risks))
    expected = None
    if rule == "gradient" and te.adapt_steps == 1:
        expected = expected_excess_risk_one_step(B, w, exp.problem, alpha=exp.config.test_alpha, m_test=te.m_test)
    return {"excess_risk": mean, "excess_risk_se": se, "excess_risk_expected": expected, "adapt": rule,
            "adapt_steps": te.adapt_steps if rule == "gradient" else None, "alpha": exp.config.test_alpha,
            "ridge": te.ridge if rule == "ridge" else None, "m_test": te.m_test, "tasks": te.tasks}


def summary(exp: Experiment, state: TrainState, test: dict | None) -> dict:
    """The run's summary.json content."""
    last = state.history[-1] if state.history else _last_row(exp, state)
    sv = [last[k] for k in last if k.startswith("sv_")]
    return {
        "status": state.status,
        "steps": state.step,
        "diverged_step": state.diverged_step,
        "message": state.message,
        "method": exp.method.name,
        "regime": exp.regime,
        "infinite_tasks": {"population": "exact population dynamics (MATH 4)",
                           "online": "online estimate: fresh tasks every step"}.get(exp.regime),
        "final": {**{k: last[k] for k in METRIC_KEYS}, "singular_values": sv,
                  "rank": int(metrics.numerical_rank(np.array(sv))) if sv else 0, "rank_rel_tol": 1e-2},
        "theory": {"lambda_star": sorted(np.linalg.eigvalsh(exp.lam_star).tolist(), reverse=True),
                   "lemma2_rate": _lemma2_rate(exp)},
        "test": test,
    }


def _last_row(exp: Experiment, state: TrainState) -> dict:
    """The metrics of the final parameters, NaN where they cannot be computed (a run that failed
    numerically before its first logged row)."""
    with np.errstate(all="ignore"), kernels.step_threads():
        try:
            return measure(exp, state.params, state.step, float("nan"))
        except NUMERICAL_FAILURES:
            return {"step": state.step, **{key: float("nan") for key in METRIC_KEYS}}


def _lemma2_rate(exp: Experiment) -> float:
    """lemma2_rate, inf where huge step sizes overflow it."""
    t = exp.config.train
    try:
        return lemma2_rate(t.alpha, t.beta, exp.problem.noise_std, float("inf") if t.m_in == "inf" else t.m_in)
    except OverflowError:
        return float("inf")


def run(config: Config, **callbacks) -> tuple[Experiment, TrainState, dict]:
    """Build, train and evaluate in memory: (experiment, final state, summary)."""
    exp = build(config)
    state = train(exp, initial_state(exp), **callbacks)
    test = evaluate_final(exp, state)
    return exp, state, summary(exp, state, test)
