"""Training batches from ragged task rows: m_in + m_out distinct rows of every training task,
stacked into `metarep.tasks.Tasks` by one fancy index (no loop over tasks)."""

from __future__ import annotations

import numpy as np

from metarep.data.table import TaskSet
from metarep.tasks import Tasks


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
