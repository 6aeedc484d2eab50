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


def shared_head(params: Params):
    """The head new tasks start from: w itself, or the mean of per-task heads."""
    return params.w if params.w.ndim == params.B.ndim - 1 else params.w.mean(axis=-2)
