"""The network experiment (`[model] arch = "mlp"`): f(x) = w^T phi(x) with two or more layers
(metarep.nonlinear), trained by a registered mlp method with torch on tasks from the synthetic
source (either teacher), measured on its first layer and its representation.

Its [model] keys are `metarep.models.mlp_options.Options`; the torch code is imported by `build`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from metarep import families, seeds
from metarep.engine import tuning
from metarep.engine.protocol import LOWER_ALPHA, LOWER_BETA, Advice
from metarep.engine.sources import (
    TEST_CHUNK,
    FromSource,
    SyntheticSource,
    chunked_scores,
    headline_rule,
    optional_prior,
    run_protocol,
    synthetic_source,
    test_advice,
    test_keys,
    tuned_rules,
    tuning_candidates,
    wants_bayes,
)
from metarep.engine.state import TrainState
from metarep.linear.adapt import summarize
from metarep.methods import Method
from metarep.methods.base import outer_gradient
from metarep.nonlinear.evaluate import (
    EVAL_BLOCK,
    EVAL_INPUTS,
    feature_moments,
    feature_prior,
    fit_test_heads,
    moment_risk,
)
from metarep.nonlinear.model import MLPParams, MLPSpec, init_mlp_params
from metarep.optimizers import from_train

# Inputs the representation is measured on (metrics).
PROBE_INPUTS = 2000
FIRST_LAYER_METRICS = ("align_norm", "sigma_min", "perp_norm", "effective_rank", "r2", "span_outside", "perp_ratio",
                       "grad_perp_share")


def spec_of(config) -> MLPSpec:
    o, m = config.model.options, config.model
    return MLPSpec(d=config.problem.d, width=m.width, layers=o.layers, hidden=o.hidden, activation=o.activation,
                   bias=o.bias)


@dataclass(frozen=True)
class MLPExperiment(FromSource):
    """Everything fixed by the config. `spec` is the trained network's architecture (a direct
    method may fix its own, e.g. the oracle's teacher network); `net` the activation, precision
    and device the steps run in; `train_tensors` the fixed training set on that device."""

    config: Any
    method: Method
    source: SyntheticSource
    spec: MLPSpec
    net: Any
    hyper: dict
    X_probe: np.ndarray
    direct: MLPParams | None = None
    train_tensors: Any = None
    runs: int | None = None

    def compute(self):
        return contextlib.nullcontext()

    def initial_state(self) -> TrainState:
        """The initial network from train.seed (or a direct method's), its heads turned into the
        method's state; the online stream's RNG state."""
        t = self.config.train
        if self.direct is not None:
            return TrainState(self.direct)
        params = init_network(self.config, self.spec)
        if self.method.init is not None:
            params = self.method.init(params, self.source.training_tasks(seeds.rng(t.seed, "train_tasks")))
        stream = seeds.rng(t.seed, self.task_stream).bit_generator.state if self.task_stream else None
        return TrainState(params, rng_state=dict(stream) if stream is not None else None,
                          opt_state=self.optimizer.init(params))

    @property
    def task_stream(self) -> str | None:
        """The stream a step draws its tasks from: fresh tasks (online), a subset of the fixed set
        (train.tasks_per_step), or none."""
        if self.source.needs_rng:
            return "online_tasks"
        return "task_batches" if self.config.train.tasks_per_step is not None and self.direct is None else None

    @property
    def optimizer(self):
        return from_train(self.config.train)

    def to_device(self, tree):
        from metarep.nonlinear.backend import to_device

        return to_device(tree, self.net)

    def to_host(self, tree):
        from metarep.nonlinear.backend import to_host

        return to_host(tree)

    def gradient(self, params: MLPParams, rng) -> tuple[MLPParams, MLPParams, float]:
        """(params, the outer gradient at them, the loss), all on the device (the fixed set already
        there; online tasks converted per step). A gradient computed on NumPy (the compiled CPU
        pass) comes back as tensors sharing its memory."""
        from metarep.nonlinear.backend import shared_tensors

        if self.train_tensors is None:
            tasks = self.source.training_tasks(rng)
        elif self.config.train.tasks_per_step is not None:
            return self._subset_gradient(params, rng)
        else:
            tasks = self.train_tensors
        at, grads, loss = outer_gradient(self.method, params, tasks, net=self.net, **self.hyper)
        return at, shared_tensors(grads), loss

    def _subset_gradient(self, params: MLPParams, rng) -> tuple[MLPParams, MLPParams, float]:
        """The gradient on train.tasks_per_step tasks of the fixed set, drawn without replacement.
        A method with one head per task steps those tasks' heads (the others' gradient is zero)."""
        from metarep.nonlinear.backend import put_rows, shared_tensors, take_rows

        tasks = self.train_tensors
        rows = np.sort(rng.choice(tasks.n_tasks, self.config.train.tasks_per_step, replace=False))
        subset = type(tasks)(*(take_rows(a, rows) for a in tasks))
        per_task = self.method.per_task_state
        sub = params._replace(w=take_rows(params.w, rows)) if per_task else params
        at, grads, loss = outer_gradient(self.method, sub, subset, net=self.net, **self.hyper)
        grads = shared_tensors(grads)
        if per_task:
            at = at._replace(w=put_rows(params.w, rows, at.w))
            grads = grads._replace(w=put_rows(0 * params.w, rows, grads.w))
        return at, grads, loss

    def measure(self, params: MLPParams, step: int, loss) -> dict:
        """step, loss, the first layer's norms and their ratio perp_ratio, the input gradient's share
        outside span(B*) (grad_perp_share), the representation's effective rank and R^2 of the
        teacher's features, the singular values sv_i of W1 and the covariance eigenvalues phi_ev_i
        of phi on the probe set (nonlinear/metrics)."""
        from metarep.nonlinear.metrics import track

        tracked = track(params, self.problem, self.X_probe, self.spec.activation)
        row: dict[str, float] = {"step": step, "loss": float(loss)}
        row.update({key: float(tracked[key]) for key in FIRST_LAYER_METRICS if key in tracked})  # the family's
        row.update({f"sv_{i}": float(s) for i, s in enumerate(tracked["singular_values"])})
        row.update({f"phi_ev_{i}": float(s) for i, s in enumerate(tracked["phi_eigenvalues"])})
        return row

    def divergence_advice(self, state: TrainState, run: int | None = None) -> Advice:
        """The inner head step is unstable when alpha times the features' top second moment
        exceeds 2; otherwise the outer step is too large."""
        t = self.config.train
        top = state.history[0].get("phi_ev_0", 0.0) if state.history else 0.0
        if "alpha" in self.hyper and t.alpha * top > 2:
            return Advice(LOWER_ALPHA, t.alpha)
        return Advice(LOWER_BETA, t.beta)

    def evaluate(self, params: MLPParams, *, on_chunk=None, should_stop=None) -> dict:
        """Excess risk on test.tasks new tasks (the linear model's test and validation tasks: same
        seed, same draws) after fitting each head on phi(X): the quadratic form of each task's head
        error in the second moments of (phi, phi*) on EVAL_INPUTS inputs (nonlinear.evaluate).
        on_chunk(done, total) after each chunk of tasks; should_stop() before each."""
        c, problem, activation = self.config, self.problem, self.spec.activation
        M = feature_moments(params, problem, activation, seeds.rng(c.test.seed, "eval_inputs"))
        prior = None
        if wants_bayes(c) and not self.method.needs_truth:
            prior = optional_prior(c, lambda: feature_prior(params, activation,
                                                            self.source.prior_stats(c, lambda tasks: tasks)))

        def score_chunk(rules, tasks):
            return np.stack([moment_risk(fit_test_heads(r.adapt, params, tasks.X_in, tasks.y_in, activation=activation,
                                                        problem=problem, prior=prior, **r.keywords()), tasks.w_star, M)
                             for r in rules])

        def score(rules, which, progress):
            return chunked_scores(problem, rules, c, which, progress, score_chunk)

        outcome = run_protocol(score, c, admits=tuned_rules(c, prior), on_chunk=on_chunk, should_stop=should_stop)
        mean, se = summarize(outcome.test)
        return {"excess_risk": mean, "excess_risk_se": se, "excess_risk_expected": None,
                **test_keys(headline_rule(outcome, c), c), "tasks": c.test.tasks, "eval_inputs": EVAL_INPUTS,
                "tuned": tuning.tuned_summary(outcome, "excess_risk"), **self.family_test(params)}

    def family_test(self, params: MLPParams) -> dict:
        """{"family": the family's own test object} where it declares one (metarep.families), with
        test-time steps of size test.alpha on what the method adapts (its gradient's per_task_body)."""
        measures = families.family_of(self.problem).test_measures
        if measures is None:
            return {}
        body = getattr(self.method.gradient, "per_task_body", False)
        out = measures(self.problem, params, activation=self.spec.activation, adapt_body=body,
                       alpha=self.config.test_alpha, rng=seeds.rng(self.config.test.seed, "family_tasks"))
        return {"family": {"name": self.config.problem.family, **out}}

    def test_advice(self) -> Advice:
        return test_advice(self.config)

    def arrays(self, params: MLPParams) -> dict[str, np.ndarray]:
        """Every field of the network (absent layers as empty arrays) and the ground truth."""
        return {**params._asdict(), **families.truth_arrays(self.problem)}

    def theory(self) -> dict | None:
        return None


def init_network(config, spec: MLPSpec) -> MLPParams:
    """The initial network from train.seed, in the configured precision."""
    m = config.model
    params = init_mlp_params(spec, init_scale=m.init_scale, init_head_scale=m.init_head_scale,
                             rng=seeds.rng(config.train.seed, "init"))
    dtype = np.dtype(config.model.options.dtype)
    return MLPParams(*(a.astype(dtype) for a in params))


def build(config) -> MLPExperiment:
    """The experiment a config describes: problem, training tasks (on the device), probe and
    evaluation inputs, and for a direct method its network."""
    from metarep.nonlinear.backend import Net, resolve_device, torch_tasks

    source = synthetic_source(config)
    spec = spec_of(config)
    method = config.method_spec
    net = Net(spec.activation, config.model.options.dtype, resolve_device(config.train.device))
    X_probe = families.probe_inputs(source.truth, PROBE_INPUTS, seeds.rng(config.problem.seed, "probe"))
    direct = None
    if method.fit is not None:
        tasks = source.training_tasks(seeds.rng(config.train.seed, "train_tasks"))
        direct, spec = method.fit(source.truth, tasks, spec=spec, init=lambda s: init_network(config, s))
        direct = MLPParams(*(a.astype(np.dtype(config.model.options.dtype)) for a in direct))
    tensors = torch_tasks(source.tasks, net) if source.tasks is not None and method.iterative else None
    return MLPExperiment(config, method, source, spec, net, config.hyper, X_probe, direct, tensors)


def estimate_bytes(config) -> dict[str, int]:
    """Bytes at the peak: the training set (twice when trained in float32 or on a GPU: the NumPy
    draw and its tensor copy), the per-step activations of every sample (a few copies of N m n1),
    per-task copies of every layer for methods that adapt the body, the test and probe work."""
    p, t, te, m = config.problem, config.train, config.test, config.model
    spec = spec_of(config)
    n = {"inf": 0, "online": t.batch_tasks}.get(str(t.tasks), t.tasks) if isinstance(t.tasks, str) else t.tasks
    samples = n * ((0 if t.m_in == "inf" else t.m_in) + (0 if t.m_out == "inf" else t.m_out))
    n_params = sum(out * (fan_in + 1) for out, fan_in in spec.shapes()) + spec.width
    copies = 1 if m.options.dtype == "float64" and t.device == "cpu" else 2
    units = sum(out for out, _ in spec.shapes())
    per_body = getattr(config.method_spec.gradient, "per_task_body", False)
    per_task = n * n_params * 4 * (t.inner_steps + 1) if per_body else 3 * n * spec.width
    n_validation = te.n_validation if te.adapt == "tuned" else 0
    return {
        "problem": (3 * p.d * p.k + 6 * n_params) * 8,
        "train_tasks": copies * samples * (p.d + 1) * 8,
        "working": (samples * units * (4 + 2 * t.inner_steps) + per_task) * 8,
        "test_tasks": (min(max(te.tasks, n_validation), TEST_CHUNK) * te.m_test * (p.d + 3 * spec.width) + EVAL_BLOCK
                       * (p.d + units + spec.width + p.k) + (te.tasks + n_validation) * tuning_candidates(te)
                       + PROBE_INPUTS * (p.d + spec.width)) * 8,
        "history": ((t.steps // t.log_every + 2) * (8 + 2 * spec.width)) * 130,
    }
