"""What every method provides, and the outer-step skeleton they share (MATH 3)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from metarep.params import Params, sgd_update


@dataclass(frozen=True)
class Method:
    """A training method as plain data: its name and its pure functions.

    gradient(params, tasks, **hyper) -> (grads: Params, loss: float)
        the outer gradient over a batch of tasks (iterative methods);
    step(params, tasks, *, beta, **hyper) -> (params, loss)
        an outer step, when it is not plain gradient descent on `gradient`;
    population_gradient(params, problem, *, alpha, m_in) -> (grads, loss)
        the exact infinite-task gradient (MATH 4), where one is derived;
    fit(problem, tasks, *, width, rng) -> Params
        a direct (non-iterative) estimate of the representation;
    init(params, tasks) -> params
        turns the model's initial (B, w) into the method's state (e.g. one head per task).
    hyper names the keyword hyper-parameters `gradient`/`step` accept, taken from [train].
    """

    name: str
    summary: str
    adapts: str
    default_adapt: str = "gradient"
    hyper: tuple[str, ...] = ()
    gradient: Callable | None = None
    step: Callable | None = None
    population_gradient: Callable | None = None
    fit: Callable | None = None
    init: Callable | None = None
    cost: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def iterative(self) -> bool:
        return self.gradient is not None or self.step is not None


def outer_step(method: Method, params: Params, tasks, *, beta: float, **hyper) -> tuple[Params, float]:
    """One outer step of an iterative method: its own `step`, or gradient descent."""
    if method.step is not None:
        return method.step(params, tasks, beta=beta, **hyper)
    grads, loss = method.gradient(params, tasks, **hyper)
    return sgd_update(params, grads, beta), loss


def chunked_gradient(method: Method, params: Params, tasks, *, chunk_tasks: int, **hyper) -> tuple[Params, float]:
    """`method.gradient` over `tasks` taken `chunk_tasks` at a time and averaged with weights
    chunk / N: the same mean over tasks (to rounding), with the per-step working memory of one
    chunk, O(chunk_tasks (d + k')), instead of O(N (d + k')). For methods whose state has no task
    axis (every meta-learning method)."""
    N = tasks.n_tasks
    grad_B, grad_w, loss = 0.0, 0.0, 0.0
    for chunk in tasks.chunks(chunk_tasks):
        grads, chunk_loss = method.gradient(params, chunk, **hyper)
        weight = chunk.n_tasks / N
        grad_B, grad_w, loss = grad_B + weight * grads.B, grad_w + weight * grads.w, loss + weight * chunk_loss
    return Params(grad_B, grad_w), float(loss)


def shared_head(params: Params):
    """The head new tasks start from: w itself, or the mean of per-task heads."""
    return params.w if params.w.ndim == params.B.ndim - 1 else params.w.mean(axis=-2)
