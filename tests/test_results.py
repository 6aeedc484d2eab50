"""The results table: one row per run_id however often a run is recorded, whole rows only,
and a CSV that holds the same numbers to the last bit."""

from __future__ import annotations

import math
import sqlite3

import pytest

from metarep.storage.results import (
    Results,
    ResultsError,
    comparable,
    failed_row,
    load_results,
    read_csv,
    row_from_summary,
)

KEYS = ["train.m_in", "problem.task_cov"]


def summary(risk: float, status: str = "completed") -> dict:
    return {"status": status, "steps": 30, "message": "" if status == "completed" else "diverged at step 3",
            "final": {"loss": math.nan, "perp_norm": 0.1 + risk, "align_norm": 1.0 / 3, "mean_norm": 1e-17,
                      "lambda_rel_err": 0.25, "rank": 2, "singular_values": [1.0, 0.5]},
            "test": {"excess_risk": risk, "excess_risk_se": 0.01} if status == "completed" else None}


def test_record_is_keyed_by_run_id(tmp_path):
    with Results(tmp_path / "r.sqlite", KEYS) as table:
        table.record(row_from_summary("b", 1, {"train.m_in": "inf", "problem.task_cov": [1.0, 2.0]}, 0,
                                      summary(0.7), 1.5))
        table.record(row_from_summary("a", 0, {"train.m_in": 5, "problem.task_cov": 1.0}, 1, summary(0.9)))
        table.record(row_from_summary("a", 0, {"train.m_in": 5, "problem.task_cov": 1.0}, 1, summary(0.8)))
        rows = table.rows()
        assert len(table) == 2
    assert [r["run_id"] for r in rows] == ["a", "b"]  # grid order, not insertion order
    assert rows[0]["excess_risk"] == 0.8 and rows[0]["seed"] == 1 and rows[0]["train.m_in"] == 5
    assert rows[1]["train.m_in"] == "inf" and rows[1]["problem.task_cov"] == "[1.0,2.0]"
    assert rows[1]["align_norm"] == 1.0 / 3 and rows[1]["mean_norm"] == 1e-17 and rows[1]["wall_s"] == 1.5
    assert list(rows[0]) == ["run_id", *KEYS, "seed", "status", "steps", "perp_norm", "align_norm", "mean_norm",
                             "lambda_rel_err", "rank", "excess_risk", "excess_risk_se", "mse", "mse_se", "message",
                             "wall_s"]


def test_diverged_and_failed_rows(tmp_path):
    with Results(tmp_path / "r.sqlite", ["train.beta"]) as table:
        table.record(row_from_summary("d", 0, {"train.beta": 1000}, 0, summary(0, "diverged")))
        table.record(failed_row("f", 1, {"train.beta": 2000}, 0, "ValueError: boom"))
        d, f = table.rows()
    assert d["status"] == "diverged" and d["excess_risk"] is None and d["message"].startswith("diverged")
    assert f["status"] == "failed" and f["message"] == "ValueError: boom" and f["steps"] is None


def test_csv_round_trips_exactly(tmp_path):
    with Results(tmp_path / "results.sqlite", KEYS) as table:
        for i, risk in enumerate([0.1, 2 / 3, 1e-300]):
            table.record(row_from_summary(f"r{i}", i, {"train.m_in": ["inf", 5, 10][i], "problem.task_cov": 2.0},
                                          i, summary(risk), 0.5))
        table.record(failed_row("r3", 3, {"train.m_in": 7, "problem.task_cov": 2.0}, 3, "RuntimeError: x, \"y\""))
        table.export_csv(tmp_path / "results.csv")
        rows = table.rows()
    columns, back = read_csv(tmp_path / "results.csv")
    assert columns == list(rows[0])
    assert back == rows
    assert load_results(tmp_path) == (columns, rows)
    assert comparable(back)[0].keys() == set(columns) - {"wall_s"}


def test_reopen_keeps_rows_and_refuses_other_keys(tmp_path):
    path = tmp_path / "r.sqlite"
    with Results(path, KEYS) as table:
        table.record(failed_row("x", 0, {"train.m_in": 5, "problem.task_cov": 1.0}, 0, "E: e"))
    with Results(path, KEYS) as table:
        assert len(table) == 1
    with Results(path) as table:
        assert table.grid_keys == KEYS and table.get("x")["message"] == "E: e" and table.get("y") is None
    with pytest.raises(ResultsError, match="grid keys"):
        Results(path, ["train.beta"])
    with pytest.raises(ResultsError):
        Results(tmp_path / "missing.sqlite")
    (tmp_path / "junk.sqlite").write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(ResultsError):
        Results(tmp_path / "junk.sqlite")
    with pytest.raises(ResultsError):
        Results(tmp_path / "bad.sqlite", ["m_in; DROP TABLE runs"])


def test_unknown_columns_are_refused_and_nothing_is_written(tmp_path):
    with Results(tmp_path / "r.sqlite", ["train.beta"]) as table:
        with pytest.raises(ResultsError):
            table.record({"run_id": "a", "idx": 0, "status": "completed", "train.alpha": 1})
        assert len(table) == 0


def test_a_transaction_is_all_or_nothing_and_readers_see_only_commits(tmp_path):
    path = tmp_path / "r.sqlite"
    with Results(path, ["train.beta"]) as table:
        reader = sqlite3.connect(path)
        with pytest.raises(RuntimeError), table.transaction() as conn:
            conn.execute("INSERT INTO runs (run_id, idx, status) VALUES ('a', 0, 'completed')")
            assert reader.execute("SELECT count(*) FROM runs").fetchone()[0] == 0  # not committed yet
            raise RuntimeError("crash mid-transaction")
        assert len(table) == 0
        table.record(failed_row("b", 1, {"train.beta": 1.0}, 0, "E: e"))
        assert reader.execute("SELECT run_id FROM runs").fetchall() == [("b",)]
        reader.close()


def test_read_csv_rejects_other_csv(tmp_path):
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ResultsError):
        read_csv(tmp_path / "x.csv")


# ----------------------------------------------------------------------------- aggregation over seeds

def _sweep_rows() -> list[dict]:
    """Two grid keys (one mixing numbers and "inf"), three seeds, a diverged and a failed run,
    missing metrics, ranks that differ between seeds."""
    import random

    rng, rows = random.Random(3), []
    for m_in in [10, "inf", 5]:
        for beta in [0.1, 0.05]:
            for seed in range(3):
                status = {(5, 0.05, 1): "diverged", ("inf", 0.1, 2): "failed"}.get((m_in, beta, seed), "completed")
                row = {"run_id": f"r{len(rows)}", "train.m_in": m_in, "train.beta": beta, "seed": seed,
                       "status": status, "rank": 2 + (seed == 2 and m_in == 10)}
                for key in ("perp_norm", "align_norm", "mean_norm", "lambda_rel_err", "excess_risk"):
                    row[key] = rng.uniform(0.1, 2.0) if status == "completed" else None
                if m_in == 5 and beta == 0.1:
                    row["lambda_rel_err"] = None
                rows.append(row)
    return rows


def _naive(rows: list[dict], keys: list[str], metric: str) -> dict[tuple, list[float]]:
    """Completed runs' values of `metric` per grid point, by a plain loop."""
    out: dict[tuple, list[float]] = {}
    for row in rows:
        values = out.setdefault(tuple(row[k] for k in keys), [])
        if row["status"] == "completed" and row[metric] is not None:
            values.append(row[metric])
    return out


def test_aggregate_is_mean_and_sample_sd_per_grid_point_in_grid_order():
    import statistics

    from metarep.storage.results import SUMMARY_METRICS, aggregate, mean_sd_text, mean_std
    from metarep.storage.tables import fmt

    rows, keys = _sweep_rows(), ["train.m_in", "train.beta"]
    headers, table = aggregate(["run_id", *keys, "seed", "status"], rows)
    assert headers == [*keys, "runs", "completed", *SUMMARY_METRICS, "rank"]
    order = [(5, 0.05), (5, 0.1), (10, 0.05), (10, 0.1), ("inf", 0.05), ("inf", 0.1)]
    assert [tuple(line[:2]) for line in table] == [(fmt(a), fmt(b)) for a, b in order]
    for line, point in zip(table, order):
        for column, metric in enumerate(SUMMARY_METRICS, start=4):
            values = _naive(rows, keys, metric)[point]
            expected = (f"{fmt(statistics.mean(values))} ± {fmt(statistics.stdev(values), 2)}" if len(values) > 1
                        else fmt(values[0]) if values else "")
            assert line[column] == expected == mean_sd_text(values)
    assert [line[3] for line in table] == ["2, 1 diverged", "3", "3", "3", "3", "2, 1 failed"]
    assert [line[-1] for line in table] == ["2", "2", "2-3", "2-3", "2", "2"]
    assert table[1][4 + SUMMARY_METRICS.index("lambda_rel_err")] == ""
    values = [1.0, None, math.nan, 2.0, 4.5]
    assert mean_std(values) == pytest.approx((statistics.mean([1.0, 2.0, 4.5]), statistics.stdev([1.0, 2.0, 4.5])))
    assert math.isnan(mean_std([1.0])[1]) and all(math.isnan(x) for x in mean_std([]))


def test_best_point_and_curves_follow_the_grid_values():
    import statistics

    from metarep.storage.results import best_point, curves

    rows, keys = _sweep_rows(), ["train.m_in", "train.beta"]
    columns = ["run_id", *keys, "seed", "status"]
    naive = _naive(rows, keys, "excess_risk")
    best = min(naive, key=lambda p: statistics.mean(naive[p]))
    assert best_point(columns, rows) == (dict(zip(keys, best)), naive[best])
    x_key, xs, lines = curves(columns, rows, "excess_risk")
    assert x_key == "train.m_in" and xs == [5, 10, "inf"]
    assert [line.label for line in lines] == ["train.beta=0.05", "train.beta=0.1"]
    for line, beta in zip(lines, [0.05, 0.1]):
        assert line.xs == xs
        assert line.means == pytest.approx([statistics.mean(naive[(x, beta)]) for x in xs], rel=1e-15)
        assert line.sds == pytest.approx([statistics.stdev(naive[(x, beta)]) for x in xs], rel=1e-12)
    assert best_point(["run_id", "seed", "status"], rows) is None
