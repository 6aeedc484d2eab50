"""The linear experiment: the two-layer linear network x -> x^T B w (MATH 2) trained by a
registered method on tasks from a source (synthetic or a table), measured with the tracked
norms of MATH 5 where the ground truth is known."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from metarep import seeds
from metarep.compute import kernels
from metarep.engine.protocol import LOWER_ALPHA, LOWER_BETA, Advice
from metarep.engine.sources import (
    TEST_CHUNK,
    FromSource,
    TaskSource,
    build_source,
    test_advice,
    tuning_candidates,
    wants_bayes,
)
from metarep.engine.state import TrainState
from metarep.linear import metrics
from metarep.linear.params import Params, init_params
from metarep.linear.theory import lambda_star, lemma2_rate
from metarep.methods import Method, shared_head
from metarep.methods.base import chunked_gradient, outer_gradient
from metarep.optimizers import from_train

FLOAT = 8
HISTORY_BYTES_PER_VALUE = 130  # a Python float in a dict row, its checkpoint copy and CSV text
TRUTH_METRICS = ("align_norm", "sigma_min", "perp_norm", "mean_norm", "lambda_rel_err")


def _inf_as_float(m):
    return float("inf") if m == "inf" else m


@dataclass(frozen=True)
class LinearExperiment(FromSource):
    """Everything fixed by the config: the method, the task source and, where the ground truth
    is known, the limit Lambda* the tracked error refers to."""

    config: Any
    method: Method
    source: TaskSource
    lam_star: np.ndarray | None
    hyper: dict
    runs: int | None = None

    def compute(self):
        return kernels.step_threads()

    def initial_state(self) -> TrainState:
        """B_0, w_0 from train.seed, or the direct estimate of a non-iterative method."""
        t, m = self.config.train, self.config.model
        if self.method.fit is not None:
            return TrainState(Params(*self.method.fit(self.problem, self._first_tasks(), width=m.width,
                                                      rng=seeds.rng(t.seed, "fit"), **self.hyper)))
        params = init_params(self.source.d, m.width, init_scale=m.init_scale, init_head_scale=m.init_head_scale,
                             rng=seeds.rng(t.seed, "init"))
        if self.method.init is not None:
            params = self.method.init(params, self._first_tasks())
        stream = seeds.rng(t.seed, "online_tasks").bit_generator.state if self.source.needs_rng else None
        return TrainState(params, rng_state=dict(stream) if stream is not None else None,
                          opt_state=self.optimizer.init(params))

    def _first_tasks(self):
        """The tasks a direct fit or per-task state starts from (a draw of its own when online)."""
        return self.source.training_tasks(seeds.rng(self.config.train.seed, "train_tasks"))

    @property
    def optimizer(self):
        return from_train(self.config.train)

    def to_device(self, tree):
        return tree

    def to_host(self, tree):
        return tree

    def gradient(self, params: Params, rng) -> tuple[Params, Params, float]:
        """(params, the outer gradient at them, the loss there); a method with its own `step`
        may move part of the parameters first (returned in place of `params`)."""
        t = self.config.train
        if self.regime == "population":
            assert self.method.population_gradient is not None
            grads, loss = self.method.population_gradient(params, self.problem, alpha=t.alpha,
                                                          m_in=_inf_as_float(t.m_in))
            return params, grads, float(loss)
        tasks = self.source.training_tasks(rng)
        if t.chunk_tasks and self.method.step is None and tasks.n_tasks > t.chunk_tasks:
            grads, loss = chunked_gradient(self.method, params, tasks, chunk_tasks=t.chunk_tasks, **self.hyper)
            return params, grads, loss
        return outer_gradient(self.method, params, tasks, **self.hyper)

    def measure(self, params: Params, step: int, loss) -> dict:
        """One metrics row: step, loss, the tracked norms (where B* is known) and the singular
        values sv_0.. of B."""
        row: dict[str, float] = {"step": step, "loss": float(loss)}
        if self.problem is None:
            sv = np.linalg.svd(params.B, compute_uv=False)
        else:
            tracked = metrics.track(params, self.problem, self.lam_star)
            row.update({key: float(tracked[key]) for key in TRUTH_METRICS})
            sv = tracked["singular_values"]
        row.update({f"sv_{i}": float(s) for i, s in enumerate(sv)})
        return row

    def divergence_advice(self, state: TrainState, run: int | None = None) -> Advice:
        """The inner head step is unstable from the start when alpha ||B_0||_2^2 > 2; otherwise the
        outer step is too large."""
        t = self.config.train
        sigma_0 = state.history[0]["sv_0"] if state.history else 0.0
        if "alpha" in self.hyper and t.alpha * sigma_0 * sigma_0 > 2:
            return Advice(LOWER_ALPHA, t.alpha)
        return Advice(LOWER_BETA, t.beta)

    def evaluate(self, params: Params, *, on_chunk=None, should_stop=None) -> dict:
        """The test section (on_chunk(done, total) after each chunk of tasks scored; should_stop()
        asked before each, KeyboardInterrupt when it says so)."""
        return self.source.evaluate(params.B, shared_head(params), self.config, on_chunk=on_chunk,
                                    should_stop=should_stop)

    def test_advice(self) -> Advice:
        return test_advice(self.config)

    def arrays(self, params: Params) -> dict[str, np.ndarray]:
        out = {"B": params.B, "w": params.w}
        if self.problem is not None:
            out.update(B_star=self.problem.B_star, mu_star=self.problem.mu_star, Sigma_star=self.problem.Sigma_star)
        return out

    def theory(self) -> dict | None:
        """The limit Lambda* and the Lemma 2 rate where the ground truth is known."""
        if self.lam_star is None:
            return None
        t = self.config.train
        try:
            rate = lemma2_rate(t.alpha, t.beta, self.problem.noise_std, _inf_as_float(t.m_in))
        except OverflowError:
            rate = float("inf")
        return {"lambda_star": sorted(np.linalg.eigvalsh(self.lam_star).tolist(), reverse=True),
                "lemma2_rate": rate}


def build(config) -> LinearExperiment:
    """The experiment a config describes: the problem and training tasks drawn from its seeds."""
    t = config.train
    source = build_source(config)
    lam = None
    if source.truth is not None:
        lam = lambda_star(source.truth.Sigma_star, source.truth.noise_std, t.alpha, _inf_as_float(t.m_in))
    return LinearExperiment(config, config.method_spec, source, lam, config.hyper)


def _size(value, default=0):
    return default if isinstance(value, str) else int(value)


def estimate_bytes(config) -> dict[str, int]:
    """Bytes each part of a run holds at its peak (task data dominates)."""
    p, t, te, width = config.problem, config.train, config.test, config.model.width
    d, k = p.d, p.k
    method = config.method_spec
    m = _size(t.m_in) + _size(t.m_out)
    n_train = {"inf": 0, "online": t.batch_tasks}.get(t.tasks, t.tasks) if isinstance(t.tasks, str) else t.tasks
    steps_kept = t.inner_steps + 1
    # per task: the inner path (heads and prediction gradients per inner step), the reverse pass's
    # factors and their concatenation, predictions, outer gradients, labels in flight
    working = n_train * (6 * steps_kept * (d + width) + 2 * m) + 6 * d * width
    if method.per_task_state:
        working += 3 * n_train * width
    if method.fit is not None:
        working += n_train * m * (d + 1) + 2 * d * d + d * width
    rule = config.adapt_rule
    tuned = te.adapt == "tuned"
    chunk = min(max(te.tasks, te.n_validation if tuned else 0), TEST_CHUNK)
    test_ws = chunk * te.m_test * (d + 2 * width + 2) + chunk * (2 * d + 3 * width + 2 * k)
    if rule == "bayes" or tuned:
        test_ws += chunk * te.m_test * (te.m_test + 2 * k)
    if rule in ("ridge", "lstsq") or tuned:
        test_ws += chunk * (te.m_test * width * 2 + width * width * 2)
    if tuned:  # one score per task for every candidate of the grid
        test_ws += (te.n_validation + te.tasks) * tuning_candidates(te)
    rows = (t.steps // t.log_every + 2) if method.iterative else 1
    # a random-effects fit (the method's own, or the empirical prior of "bayes" on X B, asked for
    # or in the tuned grid): the (N, d, d) statistics and five (N, k', k') arrays of the E-step
    # (S L, L^T S L, A, its factor, A^{-1}, the solve's copies, as measured)
    fits_prior = method.head_prior is not None or (wants_bayes(config) and not method.needs_truth)
    k_prior = method.width(d, k, width)
    n_prior = t.batch_tasks if t.tasks == "inf" else n_train
    working += n_prior * (d * d + 5 * k_prior * k_prior) if fits_prior else 0
    return {
        "problem": (3 * d * k + 6 * k * k + 4 * d * width) * FLOAT,
        "train_tasks": n_train * (m * (d + 1) + k) * FLOAT,
        "working": working * FLOAT,
        "test_tasks": (test_ws + te.tasks) * FLOAT,
        "history": rows * (7 + width) * HISTORY_BYTES_PER_VALUE,
    }
