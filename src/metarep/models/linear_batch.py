"""Many exact infinite-task runs advanced as one batch (seeds, step sizes), through the same loop.

The population dynamics are equivariant under rotations of R^d (isotropic features, MATH 4), so
run s is advanced in the frame R_s = F_ref F_s^T that maps its B*_s onto the first run's B*: one
problem, one batched population step per outer step for all runs. Parameters are rotated back
before they are measured or evaluated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from metarep.compute import kernels
from metarep.engine.loop import FLOAT_MAX
from metarep.engine.protocol import Advice
from metarep.engine.state import TrainState, params_runaway
from metarep.linear.params import Params
from metarep.models.linear import LinearExperiment, build
from metarep.optimizers import gd


def _frame(B_star: np.ndarray) -> np.ndarray:
    """An orthogonal d x d matrix whose first k columns are B* (B* = Q R with R = diag(+-1))."""
    k = B_star.shape[1]
    Q, R = np.linalg.qr(B_star, mode="complete")
    Q[:, :k] *= np.sign(np.diag(R))
    return Q


def _same_problem(exps: Sequence[LinearExperiment]):
    """The problems of `exps` differ only in B* (their seeds): check, and return the first."""
    ref = exps[0].problem
    for exp in exps[1:]:
        p = exp.problem
        if (p.B_star.shape != ref.B_star.shape or p.noise_std != ref.noise_std
                or not np.array_equal(p.mu_star, ref.mu_star) or not np.array_equal(p.Sigma_star, ref.Sigma_star)):
            raise ValueError("a population batch needs the same d, k, mu*, Sigma* and sigma in every run")
    return ref


@dataclass(frozen=True)
class PopulationBatch:
    """S exact infinite-task runs of a method with a batched population step."""

    exps: tuple[LinearExperiment, ...]
    rotations: np.ndarray          # (S, d, d)
    alpha: np.ndarray
    beta: np.ndarray
    m_in: np.ndarray
    thresholds: np.ndarray
    regime: str = "population"

    @property
    def config(self):
        return self.exps[0].config

    @property
    def method(self):
        return self.exps[0].method

    @property
    def runs(self) -> int:
        return len(self.exps)

    def compute(self):
        return kernels.step_threads()

    def initial_state(self) -> TrainState:
        init = [e.initial_state().params for e in self.exps]
        params = Params(self.rotations @ np.stack([p.B for p in init]), np.stack([p.w for p in init]))
        return TrainState(params, members=[TrainState(None) for _ in self.exps], opt_state=self.optimizer.init(params))

    @property
    def optimizer(self):
        """Gradient descent with each run's own beta (a batch of runs trains with "gd" only)."""
        return gd(self.beta)

    def to_device(self, tree):
        return tree

    def to_host(self, tree):
        return tree

    def gradient(self, params: Params, rng):
        grads, loss = self.method.population_gradient(params, self.exps[0].problem, alpha=self.alpha, m_in=self.m_in)
        return params, grads, loss

    def unrotated(self, params: Params, s: int) -> Params:
        return Params(self.rotations[s].T @ params.B[s], params.w[s].copy())

    def measure(self, params: Params, step: int, loss) -> list[dict | None]:
        """One row per run; None for a run whose parameters ran away (it has diverged already)."""
        loss = np.broadcast_to(np.asarray(loss, dtype=float), (self.runs,))
        finite = ~params_runaway(params, FLOAT_MAX, self.runs)
        return [e.measure(self.unrotated(params, s), step, loss[s]) if finite[s] else None
                for s, e in enumerate(self.exps)]

    def divergence_advice(self, state: TrainState, run: int | None = None) -> Advice:
        return self.exps[run or 0].divergence_advice(state)

    def split(self, state: TrainState) -> list[TrainState]:
        """One TrainState per run, with its parameters in its own frame."""
        out = []
        for s, run in enumerate(state.runs()):
            run.params = self.unrotated(state.params, s)
            if run.status != "diverged":
                run.step = state.step
            out.append(run)
        return out


def population_batch(configs: Sequence) -> PopulationBatch:
    """The batch of `configs` (validated configs of one method with a batched population step,
    the same train.steps, and problems that differ only in their seed)."""
    exps = tuple(build(c) for c in configs)
    if not all(e.regime == "population" and e.method.population_batch for e in exps):
        raise ValueError("a population batch runs exact infinite-task configs of a method with a batched step")
    if any(c.train.optimizer != "gd" for c in configs):
        raise ValueError("a population batch trains with train.optimizer = \"gd\" only: run the others one by one")
    if len({e.method.name for e in exps}) != 1 or len({c.train.steps for c in configs}) != 1:
        raise ValueError("a population batch needs one method and the same train.steps in every run")
    F_ref = _frame(_same_problem(exps).B_star)
    rotations = np.stack([F_ref @ _frame(e.problem.B_star).T for e in exps])
    t = [c.train for c in configs]
    return PopulationBatch(exps, rotations, np.array([x.alpha for x in t]), np.array([x.beta for x in t]),
                           np.array([float("inf") if x.m_in == "inf" else float(x.m_in) for x in t]),
                           np.array([x.diverge_threshold for x in t]))
