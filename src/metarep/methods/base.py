"""What a method declares, and the outer-step skeleton the iterative ones share (MATH 3).

A method is plain data: pure functions plus a declaration of what it can do and which
hyper-parameters it takes. Everything outside `methods/` (config, resources, the engine,
reproductions, reports) reads the declaration and never tests a method's name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict

from metarep.linear.params import Params, sgd_update


class NoHyper(BaseModel):
    """A method without hyper-parameters of its own: its [method] table holds only `name`."""

    model_config = ConfigDict(extra="forbid", frozen=True)


ADAPT_RULES = ("gradient", "ridge", "lstsq")
# The linear arch adds the empirical-Bayes head on X B (metarep.linear.adapt.empirical_prior).
LINEAR_ADAPT_RULES = (*ADAPT_RULES, "bayes")


@dataclass(frozen=True)
class Method:
    """A training method: its name, its pure functions and its declaration.

    Functions (each optional; an iterative method has `gradient` or `step`, a direct one `fit`):

    gradient(params, tasks, **hyper) -> (grads, loss)
        the outer gradient over a batch of tasks;
    step(params, tasks, **hyper) -> (params, grads, loss)
        for a method that first moves part of its state in closed form (alternating head
        solves): the moved parameters, the gradient the update follows there, and the loss;
    population_gradient(params, problem, *, alpha, m_in) -> (grads, loss)
        the exact infinite-task gradient (MATH 4), where one is derived;
    fit(problem, tasks, *, width, rng, **hyper) -> params
        a direct (non-iterative) estimate of the representation (the linear arch's keywords;
        an arch calls its own methods' fit with its own, e.g. mlp's spec and init);
    init(params, tasks) -> params
        the model's initial parameters turned into the method's state (one head per task);
    head_prior(params, stats, **hyper) -> metarep.linear.random_effects.Prior
        the prior of a new task's head on its features, from the training tasks' raw-input
        sufficient statistics `stats` (test.adapt = "bayes"; without it, the prior fitted to
        the features X B: metarep.linear.adapt.empirical_prior);
    check(config) -> None
        raises ValueError for a config this method cannot run (beyond what the fields say).

    Declaration: population_batched: its population_gradient also takes a leading axis of runs
    (alpha, m_in arrays of one value per run), so many exact runs advance as one batch.
    adapt_rules left empty is the arch's: gradient, ridge, lstsq, and bayes for the linear arch.

    Methods return gradients: the outer optimizer (`metarep.optimizers`, [train] optimizer) makes
    the step. `hyper` passed to gradient/step is the method's own table (`Hyper`, validated from
    [method]) plus the shared [train] keys named in `train_keys`.
    """

    name: str
    summary: str
    adapts: str
    arch: str = "linear"
    Hyper: type[BaseModel] = NoHyper
    train_keys: tuple[str, ...] = ()
    default_adapt: str = "gradient"
    adapt_rules: tuple[str, ...] = ()
    features: str = "X B"
    fixed_width: Callable[[int, int], int] | None = None
    needs_truth: bool = False
    relative_cost: float = 1.0
    theory: bool = False
    gradient: Callable | None = None
    step: Callable | None = None
    population_gradient: Callable | None = None
    population_batched: bool = False
    fit: Callable | None = None
    init: Callable | None = None
    head_prior: Callable | None = None
    check: Callable[[Any], None] | None = None
    cost: str = ""

    def __post_init__(self) -> None:
        if not self.adapt_rules:
            object.__setattr__(self, "adapt_rules", LINEAR_ADAPT_RULES if self.arch == "linear" else ADAPT_RULES)

    @property
    def iterative(self) -> bool:
        """Trained by outer steps (else a direct fit, with no steps)."""
        return self.gradient is not None or self.step is not None

    @property
    def infinite_tasks(self) -> bool:
        """Has an exact infinite-task (population) form: `tasks = "inf"` is allowed."""
        return self.population_gradient is not None

    @property
    def population_batch(self) -> bool:
        """Its exact population step advances many runs at once (seeds, step sizes)."""
        return self.population_batched and self.population_gradient is not None

    @property
    def per_task_state(self) -> bool:
        """Its state holds one head per training task: a fixed task set only."""
        return self.init is not None

    @property
    def online_tasks(self) -> bool:
        """Can take fresh tasks every step."""
        return self.iterative and not self.per_task_state

    def width(self, d: int, k: int, width: int) -> int:
        """The width k' it trains: its own fixed one, or model.width."""
        return self.fixed_width(d, k) if self.fixed_width is not None else width

    def capabilities(self) -> dict[str, Any]:
        """What it can do, as a flat record (one row of `metarep.methods()`)."""
        return {"name": self.name, "arch": self.arch, "iterative": self.iterative,
                "infinite_tasks": self.infinite_tasks, "online_tasks": self.online_tasks,
                "per_task_state": self.per_task_state, "default_adapt": self.default_adapt,
                "hyper": ", ".join([*self.train_keys, *self.Hyper.model_fields]),
                "needs_truth": self.needs_truth, "summary": self.summary}


def outer_gradient(method: Method, params, tasks, **hyper) -> tuple[Any, Any, float]:
    """(the point the update starts from, the outer gradient there, the loss): the method's own
    `step` (a closed-form move first), or its gradient at `params`."""
    if method.step is not None:
        return method.step(params, tasks, **hyper)
    assert method.gradient is not None, f"{method.name} is not iterative"
    grads, loss = method.gradient(params, tasks, **hyper)
    return params, grads, loss


def outer_step(method: Method, params, tasks, *, beta: float, **hyper) -> tuple[Any, float]:
    """One outer step of plain gradient descent (the paper's), for scripts and tests: the engine
    applies the configured optimizer (`metarep.optimizers`) to `outer_gradient` instead."""
    at, grads, loss = outer_gradient(method, params, tasks, **hyper)
    return sgd_update(at, grads, beta), loss


def chunked_gradient(method: Method, params: Params, tasks, *, chunk_tasks: int, **hyper) -> tuple[Params, float]:
    """`method.gradient` over `tasks` taken `chunk_tasks` at a time and averaged with weights
    chunk / N: the same mean over tasks (to rounding), with the per-step working memory of one
    chunk, O(chunk_tasks (d + k')), instead of O(N (d + k')). For methods whose state has no task
    axis (every meta-learning method)."""
    assert method.gradient is not None
    N = tasks.n_tasks
    grad_B: Any = 0.0
    grad_w: Any = 0.0
    loss = 0.0
    for chunk in tasks.chunks(chunk_tasks):
        grads, chunk_loss = method.gradient(params, chunk, **hyper)
        weight = chunk.n_tasks / N
        grad_B, grad_w, loss = grad_B + weight * grads.B, grad_w + weight * grads.w, loss + weight * chunk_loss
    return Params(grad_B, grad_w), float(loss)


def shared_head(params: Params):
    """The head new tasks start from: w itself, or the mean of per-task heads."""
    return params.w if params.w.ndim == params.B.ndim - 1 else params.w.mean(axis=-2)
