"""Held-out tasks at test time: adapt on the first m_test rows of each task (its rows are in
a seeded random order), score the mean squared error on the rest.

Every method meets the same tasks and the same rows for a given [data] and m_test, so its
per-task errors are paired with every other method's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from metarep.data.table import TaskSet
from metarep.linear.adapt import fit_heads, summarize

HELDOUT_RULES = ("gradient", "ridge", "lstsq")


@dataclass(frozen=True)
class Episodes:
    """The held-out tasks with more than m_test rows: adaptation rows X (T, m_test, d),
    y (T, m_test); evaluation rows X_eval (R, d), y_eval (R,) of task `task` (R,)."""

    X: np.ndarray
    y: np.ndarray
    X_eval: np.ndarray
    y_eval: np.ndarray
    task: np.ndarray
    names: tuple[str, ...]
    skipped: int

    @property
    def n_tasks(self) -> int:
        return self.X.shape[0]


def episodes(heldout: TaskSet, m_test: int) -> Episodes:
    """Split every held-out task with at least m_test + 1 rows into its first m_test rows and
    the rest; smaller tasks are skipped (counted)."""
    kept = np.flatnonzero(heldout.sizes > m_test)
    tasks = heldout.select(kept)
    first = tasks.offsets[:-1, None] + np.arange(m_test)
    task = tasks.task_of_row()
    evaluated = np.arange(len(task)) - tasks.offsets[task] >= m_test
    return Episodes(tasks.X[first], tasks.y[first], tasks.X[evaluated], tasks.y[evaluated], task[evaluated],
                    tasks.names, heldout.n_tasks - len(kept))


def task_mse(theta: np.ndarray, ep: Episodes) -> np.ndarray:
    """Mean squared error of the linear predictors theta (T, d) on each task's evaluation rows, (T,)."""
    residual = ep.y_eval - np.einsum("rd,rd->r", ep.X_eval, theta[ep.task])
    counts = np.bincount(ep.task, minlength=ep.n_tasks)
    return np.bincount(ep.task, weights=residual * residual, minlength=ep.n_tasks) / counts


def heldout_mse(B: np.ndarray, w: np.ndarray, ep: Episodes, *, rule: str, alpha: float = 0.0, steps: int = 1,
                ridge: float = 0.0, prior=None) -> np.ndarray:
    """Per-task test MSE of the model x^T B w after the test-time rule ("gradient": `steps`
    head steps of size alpha from w; "ridge", "lstsq": a head fitted on X B; "bayes" with
    `prior`: the empirical-Bayes head on X B, metarep.linear.adapt.fit_heads), (T,)."""
    if rule not in HELDOUT_RULES and not (rule == "bayes" and prior is not None):
        raise ValueError(f"test.adapt = {rule!r} needs the synthetic model's truth; real data takes gradient, "
                         "ridge or lstsq")
    heads = fit_heads(rule, B, w, ep.X, ep.y, alpha=alpha, steps=steps, ridge=ridge, prior=prior)
    return task_mse(heads @ B.T, ep)


def summary(mse: np.ndarray, ep: Episodes, m_test: int) -> dict:
    """The test entry of a summary: mean and standard error over held-out tasks."""
    mean, se = summarize(mse)
    return {"mse": mean, "mse_se": se, "m_test": m_test, "tasks": ep.n_tasks, "tasks_skipped": ep.skipped,
            "eval_rows": int(len(ep.y_eval))}
