"""Training draws and held-out scoring on ragged tasks, against naive per-task loops."""

import numpy as np
import pytest

from metarep.data.heldout import episodes, heldout_mse
from metarep.data.source import draw_rows, draw_tasks
from metarep.data.table import TaskSet
from metarep.families.tasks import Tasks
from metarep.linear.adapt import gradient_heads
from metarep.methods.pooled import pooled_fit, pooled_ridge


def ragged(sizes, d=4, seed=0):
    rng = np.random.default_rng(seed)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    return TaskSet(rng.standard_normal((offsets[-1], d)), rng.standard_normal(offsets[-1]), offsets,
                   tuple(f"t{i}" for i in range(len(sizes))))


def test_draws_are_distinct_rows_of_each_task_and_uniform():
    tasks = ragged([5, 12, 7, 30])
    rng = np.random.default_rng(1)
    m, draws = 5, 4000
    counts = np.zeros(len(tasks.y))
    for _ in range(draws):
        rows = draw_rows(tasks, m, rng)
        for i in range(tasks.n_tasks):  # the naive check, task by task
            assert len(set(rows[i])) == m
            assert tasks.offsets[i] <= rows[i].min() and rows[i].max() < tasks.offsets[i + 1]
        np.add.at(counts, rows.ravel(), 1)
    expected = draws * m / np.repeat(tasks.sizes, tasks.sizes)  # each row with probability m / n_i
    assert np.abs(counts / expected - 1).max() < 0.12
    np.testing.assert_array_equal(counts[:5], draws)  # a task of exactly m rows is always drawn whole


def test_draw_tasks_stacks_inner_and_outer_rows():
    tasks = ragged([6, 9, 8])
    batch = draw_tasks(tasks, 2, 3, np.random.default_rng(0))
    assert batch.X_in.shape == (3, 2, 4) and batch.X_out.shape == (3, 3, 4) and batch.w_star is None
    for i in range(3):
        rows = tasks.X[tasks.offsets[i]:tasks.offsets[i + 1]]
        both = np.concatenate([batch.X_in[i], batch.X_out[i]])
        hits = [np.flatnonzero((rows == x).all(axis=1)) for x in both]
        assert all(len(h) == 1 for h in hits) and len({int(h[0]) for h in hits}) == 5
        y = tasks.y[tasks.offsets[i] + np.array([int(h[0]) for h in hits])]
        np.testing.assert_array_equal(np.concatenate([batch.y_in[i], batch.y_out[i]]), y)
    with pytest.raises(ValueError, match="fewer than 7 rows"):
        draw_rows(tasks, 7, np.random.default_rng(0))


def naive_mse(B, w, tasks, m_test, rule, alpha=0.1, steps=2, ridge=0.3):
    """Per-task loop: adapt on the first m_test rows, score the rest."""
    out = []
    for i in range(tasks.n_tasks):
        X = tasks.X[tasks.offsets[i]:tasks.offsets[i + 1]]
        y = tasks.y[tasks.offsets[i]:tasks.offsets[i + 1]]
        if len(y) <= m_test:
            continue
        F, t = X[:m_test] @ B, y[:m_test]
        if rule == "lstsq":
            head = np.linalg.lstsq(F, t, rcond=None)[0]
        elif rule == "ridge":
            head = np.linalg.solve(F.T @ F / m_test + ridge * np.eye(B.shape[1]), F.T @ t / m_test)
        else:
            head = w.copy()
            for _ in range(steps):
                head = head - alpha * F.T @ (F @ head - t) / m_test
        r = X[m_test:] @ B @ head - y[m_test:]
        out.append(r @ r / len(r))
    return np.array(out)


@pytest.mark.parametrize("rule", ["lstsq", "ridge", "gradient"])
def test_heldout_mse_matches_a_per_task_loop(rule):
    tasks = ragged([3, 10, 4, 25, 6, 9])
    rng = np.random.default_rng(2)
    B, w = rng.standard_normal((4, 3)), rng.standard_normal(3)
    ep = episodes(tasks, 4)
    assert ep.n_tasks == 4 and ep.skipped == 2 and ep.names == ("t1", "t3", "t4", "t5")
    got = heldout_mse(B, w, ep, rule=rule, alpha=0.1, steps=2, ridge=0.3)
    np.testing.assert_allclose(got, naive_mse(B, w, tasks, 4, rule), rtol=1e-10)


def test_heldout_refuses_rules_that_need_the_truth():
    with pytest.raises(ValueError, match="synthetic model's truth"):
        heldout_mse(np.eye(4), np.zeros(4), episodes(ragged([5, 6]), 2), rule="bayes")


def test_pooled_ridge_against_an_augmented_least_squares():
    rng = np.random.default_rng(3)
    tasks = Tasks(rng.standard_normal((5, 4, 3)), rng.standard_normal((5, 4)), rng.standard_normal((5, 2, 3)),
                  rng.standard_normal((5, 2)))
    params = pooled_fit(None, tasks, lam=0.2)
    X = np.concatenate([tasks.X_in.reshape(-1, 3), tasks.X_out.reshape(-1, 3)])
    y = np.concatenate([tasks.y_in.ravel(), tasks.y_out.ravel()])
    n = len(y)  # min 1/(2n)|X t - y|^2 + lam/2 |t|^2 as one least-squares problem
    augmented = np.linalg.lstsq(np.vstack([X / np.sqrt(n), np.sqrt(0.2) * np.eye(3)]),
                                np.concatenate([y / np.sqrt(n), np.zeros(3)]), rcond=None)[0]
    np.testing.assert_allclose(params.w, augmented, rtol=1e-10)
    np.testing.assert_array_equal(params.B, np.eye(3))
    np.testing.assert_allclose(pooled_ridge(X, y, lam=0.0), np.linalg.lstsq(X, y, rcond=None)[0], rtol=1e-10)
    # without adaptation the pooled model predicts with theta on every task
    np.testing.assert_array_equal(gradient_heads(params.B, params.w, X[None], y[None], alpha=0.1, steps=0)[0],
                                  params.w)
