"""Where training and test tasks come from: the synthetic model (MATH 1), or a table of real
tasks (metarep.data). The linear experiment asks a source for each step's tasks and for the
test section of the summary; it never needs to know which source it has."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from metarep import seeds
from metarep.adapt import excess_risk, expected_excess_risk_one_step, fit_heads, summarize
from metarep.problem import Problem, make_problem, sample_tasks
from metarep.tasks import Tasks

# Test tasks are drawn and scored this many at a time (bounded working memory).
TEST_CHUNK = 2048


class TaskSource(Protocol):
    """truth: the ground truth (B*, mu*, Sigma*) where it is known, else None;
    regime: "finite" (a fixed set of tasks), "online" (fresh tasks every step) or "population";
    d: the input dimension; needs_rng: whether `training_tasks` draws from the run's task stream
    (whose state is checkpointed)."""

    @property
    def truth(self) -> Problem | None: ...

    @property
    def regime(self) -> str: ...

    @property
    def d(self) -> int: ...

    @property
    def needs_rng(self) -> bool: ...

    def training_tasks(self, rng: np.random.Generator | None) -> Tasks:
        """The tasks of one outer step (the fixed set, or a fresh draw from `rng`)."""
        ...

    def evaluate(self, B: np.ndarray, w: np.ndarray, config: Any) -> dict:
        """The test section of the summary for the representation B and the shared head w."""
        ...


class FromSource:
    """For an experiment with a `source`: its regime and its ground truth (`problem`, None when
    unknown) are the source's."""

    source: TaskSource

    @property
    def regime(self) -> str:
        return self.source.regime

    @property
    def problem(self):
        return self.source.truth


@dataclass(frozen=True)
class SyntheticSource:
    """Tasks drawn from the model of MATH 1: a fixed set of train.tasks tasks, fresh tasks every
    step ("online"), or none at all ("inf": the population dynamics use only the moments)."""

    truth: Problem
    regime: str
    tasks: Tasks | None
    batch_tasks: int
    m_in: Any
    m_out: Any

    @property
    def d(self) -> int:
        return self.truth.d

    @property
    def needs_rng(self) -> bool:
        return self.regime == "online"

    def training_tasks(self, rng: np.random.Generator | None) -> Tasks:
        if self.tasks is not None:
            return self.tasks
        assert rng is not None, "online tasks need the task stream's generator"
        return sample_tasks(self.truth, self.batch_tasks, self.m_in, self.m_out, rng)

    def evaluate(self, B: np.ndarray, w: np.ndarray, config: Any) -> dict:
        """Excess risk on test.tasks new tasks after test-time adaptation (MATH 6), mean and s.e.
        Test tasks depend only on the problem and test.seed, so every method meets the same tasks."""
        te, rule, problem = config.test, config.adapt_rule, self.truth
        rng = seeds.rng(te.seed, "test_tasks")
        risks = []
        for start in range(0, te.tasks, TEST_CHUNK):
            tasks = sample_tasks(problem, min(TEST_CHUNK, te.tasks - start), te.m_test, 0, rng)
            heads = fit_heads(rule, B, w, tasks.X_in, tasks.y_in, problem=problem, alpha=config.test_alpha,
                              steps=te.adapt_steps, ridge=te.ridge)
            risks.append(excess_risk(B, heads, problem.B_star, tasks.w_star))
        mean, se = summarize(np.concatenate(risks))
        expected = None
        if rule == "gradient" and te.adapt_steps == 1:
            expected = expected_excess_risk_one_step(B, w, problem, alpha=config.test_alpha, m_test=te.m_test)
        return {"excess_risk": mean, "excess_risk_se": se, "excess_risk_expected": expected, "adapt": rule,
                "adapt_steps": te.adapt_steps if rule == "gradient" else None, "alpha": config.test_alpha,
                "ridge": te.ridge if rule == "ridge" else None, "m_test": te.m_test, "tasks": te.tasks}


def synthetic_problem(config) -> Problem:
    p = config.problem
    return make_problem(p.d, p.k, task_mean=p.task_mean, task_cov=p.task_cov, noise_std=p.noise_std,
                        rng=seeds.rng(p.seed, "problem"), teacher=p.teacher)


def synthetic_source(config) -> SyntheticSource:
    """The problem from problem.seed, and (for a fixed set) the training tasks from train.seed."""
    t = config.train
    problem = synthetic_problem(config)
    regime = {"inf": "population", "online": "online"}.get(str(t.tasks), "finite")
    tasks = None
    if regime == "finite":
        tasks = sample_tasks(problem, t.tasks, t.m_in, t.m_out, seeds.rng(t.seed, "train_tasks"))
    return SyntheticSource(problem, regime, tasks, t.batch_tasks, t.m_in, t.m_out)


def build_source(config) -> TaskSource:
    """The source the config's [data] table names (synthetic unless it names a table)."""
    data = getattr(config, "data", None)
    if data is None or getattr(data, "source", "synthetic") == "synthetic":
        return synthetic_source(config)
    from metarep.data import table_source

    return table_source(config)
