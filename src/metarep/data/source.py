"""Training batches from ragged task rows: m_in + m_out distinct rows of every training task,
stacked into `metarep.families.tasks.Tasks` by one fancy index (no loop over tasks); and the task source
the linear experiment reads them from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from metarep.data.heldout import episodes, heldout_mse, summary
from metarep.data.table import TaskData, TaskSet
from metarep.engine.sources import head_prior, headline_rule, run_protocol, test_keys, tuned_rules
from metarep.engine.tuning import tuned_summary
from metarep.families.tasks import Tasks
from metarep.linear.random_effects import ragged_stats


def draw_rows(tasks: TaskSet, m: int, rng: np.random.Generator) -> np.ndarray:
    """(N, m) row indices: m distinct rows of each task, uniformly at random without
    replacement. One uniform key per row, sorted within tasks: O(rows log rows)."""
    if m > int(tasks.sizes.min(initial=m)):
        raise ValueError(f"a task has fewer than {m} rows")
    order = np.argsort(tasks.task_of_row() + rng.random(len(tasks.y)), kind="stable")
    return order[tasks.offsets[:-1, None] + np.arange(m)]


def draw_tasks(tasks: TaskSet, m_in: int, m_out: int, rng: np.random.Generator) -> Tasks:
    """Tasks with X_in (N, m_in, d), y_in, X_out (N, m_out, d), y_out: disjoint rows of each
    task, drawn by `draw_rows`; w_star is None (no true heads)."""
    rows = draw_rows(tasks, m_in + m_out, rng)
    inner, outer = rows[:, :m_in], rows[:, m_in:]
    return Tasks(tasks.X[inner], tasks.y[inner], tasks.X[outer], tasks.y[outer])


@dataclass(frozen=True)
class TableSource:
    """Training and held-out tasks of a table (metarep.engine.sources.TaskSource): a fixed set of
    training tasks whose m_in + m_out rows are drawn afresh every step from the run's task
    stream (draw = "every_step"), or once (`fixed`). There is no ground truth."""

    data: TaskData
    m_in: int
    m_out: int
    fixed: Tasks | None
    description: dict = field(default_factory=dict)
    truth: None = None
    regime: str = "finite"

    @property
    def d(self) -> int:
        return self.data.d

    @property
    def needs_rng(self) -> bool:
        return self.fixed is None

    def training_tasks(self, rng: np.random.Generator | None) -> Tasks:
        if self.fixed is not None:
            return self.fixed
        assert rng is not None, "rows drawn every step need the task stream's generator"
        return draw_tasks(self.data.train, self.m_in, self.m_out, rng)

    def evaluate(self, B: np.ndarray, w: np.ndarray, config: Any, *, on_chunk=None, should_stop=None) -> dict:
        """Test MSE on the held-out tasks after the test-time rule (metarep.data.heldout); with
        test.adapt = "tuned", the rule chosen on the validation tasks (metarep.engine.tuning). Each set
        of tasks is one chunk for on_chunk(done, total) and should_stop()."""
        te = config.test
        sets = {"test": episodes(self.data.heldout, te.m_test)}
        if self.data.validation is not None:
            sets["validation"] = episodes(self.data.validation, te.m_test)
        train = self.data.train
        prior = head_prior(config, B, w, lambda: ragged_stats(train.X, train.y, train.offsets))

        def score(rules, which, progress):
            progress.check()
            out = np.stack([heldout_mse(B, w, sets[which], rule=r.adapt, prior=prior, **r.keywords()) for r in rules])
            progress.chunk(sets[which].n_tasks)
            return out

        n_validation = sets["validation"].n_tasks if "validation" in sets else 0
        outcome = run_protocol(score, config, admits=tuned_rules(config, prior), n_validation=n_validation,
                               n_test=sets["test"].n_tasks, on_chunk=on_chunk, should_stop=should_stop)
        return {**summary(outcome.test, sets["test"], te.m_test), **test_keys(headline_rule(outcome, config), config),
                "data": self.description, "tuned": tuned_summary(outcome, "mse")}
