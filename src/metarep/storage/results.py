"""The sweep results table: one row per run in SQLite (DIR/results.sqlite), exportable to CSV.

Only the sweep's parent process writes the table, one transaction per finished run, with
`INSERT OR REPLACE` keyed by run_id: a run is never duplicated, and a crash at any instant
leaves every committed row whole (SQLite's journal rolls back a half-done transaction).
WAL mode lets readers (a report, a progress poll) read while the sweep writes.

Columns: run_id, one column per grid key (named like "train.m_in"), seed, status, steps, the
final metrics, the test excess risk and its standard error, the message of a run that diverged
or failed, and wall_s (the run's wall time, which differs between machines: compare rows with
`comparable`).

Aggregation over seeds (one row per grid point, mean and sample standard deviation of the
completed runs; a pandas group-by) is here too, for the sweep's printed table, its report page
and its figure.
"""

from __future__ import annotations

import csv
import json
import math
import re
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from metarep.storage.atomic import atomic_write
from metarep.storage.tables import csv_text, fmt

if TYPE_CHECKING:
    import pandas

METRICS = ("perp_norm", "align_norm", "mean_norm", "lambda_rel_err", "rank")
TEST_METRICS = ("excess_risk", "excess_risk_se", "mse", "mse_se")  # mse: held-out real tasks
STATUSES = ("completed", "diverged", "failed")
SUMMARY_METRICS = ("excess_risk", "perp_norm", "align_norm", "mean_norm", "lambda_rel_err")
PM = "±"
# Columns other than the grid keys, in CSV order; idx (the run's place in the grid) orders rows.
FIXED = (("run_id", "TEXT PRIMARY KEY"), ("idx", "INTEGER NOT NULL"), ("seed", "INTEGER"),
         ("status", "TEXT NOT NULL"), ("steps", "INTEGER"), ("perp_norm", "REAL"), ("align_norm", "REAL"),
         ("mean_norm", "REAL"), ("lambda_rel_err", "REAL"), ("rank", "INTEGER"), ("excess_risk", "REAL"),
         ("excess_risk_se", "REAL"), ("mse", "REAL"), ("mse_se", "REAL"), ("message", "TEXT"), ("wall_s", "REAL"))
NOT_COMPARED = ("wall_s",)
GRID_KEY = re.compile(r"^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*$")
BUSY_TIMEOUT_MS = 30_000


class ResultsError(ValueError):
    """A results table that cannot be used as asked."""


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def encode_value(value: Any) -> Any:
    """A grid value as SQLite stores it: numbers and strings as they are, lists and tables as JSON."""
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, separators=(",", ":"))
    return value


def _finite_or_none(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def row_from_summary(run_id: str, idx: int, point: dict[str, Any], seed: int | None, summary: dict,
                     wall_s: float | None = None) -> dict[str, Any]:
    """The table row of a run that finished (completed or diverged), from its summary.json content."""
    final, test = summary.get("final") or {}, summary.get("test") or {}
    row = {"run_id": run_id, "idx": idx, "seed": seed, "status": summary["status"], "steps": summary.get("steps"),
           "message": summary.get("message") or "", "wall_s": wall_s}
    row.update({key: _finite_or_none(final.get(key)) for key in METRICS if key != "rank"})
    row["rank"] = final.get("rank")
    row.update({key: _finite_or_none(test.get(key)) for key in TEST_METRICS})
    row.update(point)
    return row


def failed_row(run_id: str, idx: int, point: dict[str, Any], seed: int | None, message: str,
               wall_s: float | None = None) -> dict[str, Any]:
    """The row of a run that raised: status 'failed' and the one-line error."""
    row = {"run_id": run_id, "idx": idx, "seed": seed, "status": "failed", "message": message, "wall_s": wall_s}
    row.update(point)
    return row


def comparable(rows: Iterable[dict]) -> list[dict]:
    """Rows without the columns that legitimately differ between equal runs (wall time)."""
    return [{k: v for k, v in row.items() if k not in NOT_COMPARED} for row in rows]


class Results:
    """The results table of one sweep, in an SQLite file.

    `Results(path, grid_keys)` creates the table (or opens it, refusing other grid keys);
    `Results(path)` opens an existing one. Use as a context manager, or call close().
    """

    def __init__(self, path: str | Path, grid_keys: Iterable[str] | None = None):
        self.path = Path(path)
        if grid_keys is None and not self.path.exists():
            raise ResultsError(f"no results table at {str(self.path)!r}")
        self.conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        self.conn.row_factory = sqlite3.Row
        try:
            self.conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            if grid_keys is not None:
                self.conn.execute("PRAGMA journal_mode = WAL")
                self.conn.execute("PRAGMA synchronous = NORMAL")
            self.grid_keys = self._setup(None if grid_keys is None else list(grid_keys))
        except sqlite3.DatabaseError as err:
            self.conn.close()
            raise ResultsError(f"{str(self.path)!r} is not a usable results table: {err}") from None
        except BaseException:
            self.conn.close()
            raise

    def _setup(self, grid_keys: list[str] | None) -> list[str]:
        existing = self.conn.execute("SELECT value FROM meta WHERE key = 'grid_keys'").fetchone() \
            if self._has_table("meta") else None
        if existing is not None:
            stored = json.loads(existing[0])
            if grid_keys is not None and stored != grid_keys:
                raise ResultsError(f"{str(self.path)!r} holds results for grid keys {stored}, not {grid_keys}")
            return stored
        if grid_keys is None:
            raise ResultsError(f"{str(self.path)!r} is not a metarep results table")
        for key in grid_keys:
            if not GRID_KEY.match(key):
                raise ResultsError(f"grid key {key!r} is not of the form section.key")
        columns = [f"{_quote(name)} {kind}" for name, kind in FIXED] + [_quote(key) for key in grid_keys]
        with self.transaction():
            self.conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            self.conn.execute(f"CREATE TABLE IF NOT EXISTS runs ({', '.join(columns)})")
            self.conn.execute("INSERT OR REPLACE INTO meta VALUES ('grid_keys', ?)", (json.dumps(grid_keys),))
        return grid_keys

    def _has_table(self, name: str) -> bool:
        return self.conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                                 (name,)).fetchone() is not None

    def transaction(self):
        return _Transaction(self.conn)

    @property
    def columns(self) -> list[str]:
        """All columns in display order: run_id, the grid keys, seed, status, metrics..., wall_s."""
        names = [name for name, _ in FIXED if name != "idx"]
        return names[:1] + self.grid_keys + names[1:]

    def record(self, row: dict[str, Any]) -> None:
        """Insert or replace one run's row, in its own transaction."""
        names = [name for name, _ in FIXED] + self.grid_keys
        unknown = set(row) - set(names)
        if unknown:
            raise ResultsError(f"unknown result columns {sorted(unknown)}")
        values = [encode_value(row.get(name)) for name in names]
        sql = (f"INSERT OR REPLACE INTO runs ({', '.join(map(_quote, names))}) "
               f"VALUES ({', '.join('?' * len(names))})")
        with self.transaction():
            self.conn.execute(sql, values)

    def rows(self) -> list[dict[str, Any]]:
        """Every row, in grid order (idx), as {column: value} without idx."""
        cursor = self.conn.execute(f"SELECT {', '.join(map(_quote, self.columns))} FROM runs ORDER BY idx, run_id")
        return [dict(row) for row in cursor]

    def get(self, run_id: str) -> dict[str, Any] | None:
        row = self.conn.execute(f"SELECT {', '.join(map(_quote, self.columns))} FROM runs WHERE run_id = ?",
                                (run_id,)).fetchone()
        return None if row is None else dict(row)

    def __len__(self) -> int:
        return self.conn.execute("SELECT count(*) FROM runs").fetchone()[0]

    def export_csv(self, path: str | Path) -> Path:
        """Write every row to a CSV file atomically (floats with repr precision, empty for missing)."""
        path = Path(path)
        atomic_write(path, csv_text(self.rows(), self.columns).encode())
        return path

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on an exception (autocommit connection)."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self):
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb):
        self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
        return False


def _parse_cell(column: str, text: str) -> Any:
    if column in ("run_id", "status", "message"):
        return text
    if text == "":
        return None
    try:
        return int(text)
    except ValueError:
        pass
    if GRID_KEY.match(column) and text.strip().lower().lstrip("+-") in ("inf", "infinity", "nan"):
        return text  # a grid value such as train.m_in = "inf" is a string, as in the config
    try:
        return float(text)
    except ValueError:
        return text


def read_csv(path: str | Path) -> tuple[list[str], list[dict[str, Any]]]:
    """A results CSV back into (columns, rows), numbers as numbers and empty cells as None."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        columns = list(reader.fieldnames or [])
        rows = [{c: _parse_cell(c, row[c]) for c in columns} for row in reader]
    if "run_id" not in columns or "status" not in columns:
        raise ResultsError(f"{str(path)!r} is not a sweep results CSV (no run_id and status columns)")
    return columns, rows


def grid_keys_of(columns: list[str]) -> list[str]:
    """The grid-key columns of a results table or CSV."""
    return [c for c in columns if GRID_KEY.match(c)]


def load_results(directory: str | Path) -> tuple[list[str], list[dict[str, Any]]]:
    """(columns, rows) of a sweep directory, from results.sqlite, else results.csv."""
    directory = Path(directory)
    if (directory / "results.sqlite").exists():
        with Results(directory / "results.sqlite") as table:
            return table.columns, table.rows()
    if (directory / "results.csv").exists():
        return read_csv(directory / "results.csv")
    raise ResultsError(f"{str(directory)!r} has no results.sqlite or results.csv")


# ----------------------------------------------------------------------------- aggregation over seeds


def natural_key(value: Any) -> tuple:
    """Numbers ascending with "inf" after them, then strings; orders grid values."""
    if value is None:
        return (2, "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, float(value))
    if isinstance(value, str) and value.strip().lower() in ("inf", "infinity"):
        return (0, math.inf)
    return (1, str(value))


def mean_std(values: Iterable[float | None]) -> tuple[float, float]:
    """Mean and sample standard deviation of the finite values (nan when there are none; the
    standard deviation is nan for a single value)."""
    import numpy as np
    import pandas as pd

    v = pd.Series([x for x in values if x is not None], dtype="float64")
    v = v[np.isfinite(v)]
    return float(v.mean()), float(v.std(ddof=1))


def mean_sd_text(values: Iterable[float | None]) -> str:
    """"mean ± sd" of the finite values, the value alone when there is one, "" when none."""
    mean, sd = mean_std(values)
    if math.isnan(mean):
        return ""
    return fmt(mean) if math.isnan(sd) else f"{fmt(mean)} {PM} {fmt(sd, 2)}"


def _frame(rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> pandas.DataFrame:
    """The rows as a DataFrame of `columns` (grid values kept as they are: numbers and "inf")."""
    import pandas as pd

    return pd.DataFrame(list(rows), columns=list(dict.fromkeys(columns)), dtype=object)


def group(frame: pandas.DataFrame, keys: Sequence[str]) -> list[tuple[tuple, pandas.DataFrame]]:
    """(values of `keys`, the rows that have them) for each grid point, in the natural order of
    the values (`natural_key`: a grid column mixes numbers and "inf")."""
    if not keys:
        return [((), frame)] if len(frame) else []
    groups = [(k if isinstance(k, tuple) else (k,), g)
              for k, g in frame.groupby(list(keys), sort=False, dropna=False)]
    groups = [(tuple(None if _missing(v) else v for v in k), g) for k, g in groups]
    return sorted(groups, key=lambda kg: [natural_key(v) for v in kg[0]])


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _completed(rows: pandas.DataFrame) -> pandas.DataFrame:
    return rows[rows["status"] == "completed"]


def _values(rows: pandas.DataFrame, metric: str) -> list[float]:
    """`metric` over the completed runs that have it."""
    return [float(v) for v in _completed(rows)[metric] if not _missing(v)]


def _status_text(rows: pandas.DataFrame) -> str:
    """"2" (completed), or "0, 2 diverged" when some did not complete."""
    counts = rows["status"].value_counts()
    other = sorted((status, n) for status, n in counts.items() if status != "completed")
    return f"{counts.get('completed', 0)}" + "".join(f", {n} {status}" for status, n in other)


def _rank_text(rows: pandas.DataFrame) -> str:
    ranks = sorted({int(r) for r in _completed(rows)["rank"] if not _missing(r)})
    return "" if not ranks else str(ranks[0]) if len(ranks) == 1 else f"{ranks[0]}-{ranks[-1]}"


def aggregate(columns: list[str], rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """(headers, table) with one row per grid point: the runs' statuses and mean ± sd over seeds
    of the completed runs, ordered by the grid values."""
    keys = grid_keys_of(columns)
    headers = [*keys, "runs", "completed", *SUMMARY_METRICS, "rank"]
    frame = _frame(rows, [*keys, "status", "rank", *SUMMARY_METRICS])
    table = [[*(fmt(v) for v in point), str(len(g)), _status_text(g),
              *(mean_sd_text(_values(g, m)) for m in SUMMARY_METRICS), _rank_text(g)]
             for point, g in group(frame, keys)]
    return headers, table


def test_score(rows: list[dict[str, Any]]) -> str:
    """The test column runs are compared by: "excess_risk" (synthetic tasks), or "mse" when
    only held-out real tasks were scored."""
    has = {key: any(r.get(key) is not None for r in rows) for key in ("excess_risk", "mse")}
    return "mse" if has["mse"] and not has["excess_risk"] else "excess_risk"


def best_point(columns: list[str], rows: list[dict[str, Any]]) -> tuple[dict[str, Any], list[float]] | None:
    """The grid point with the lowest mean test score (`test_score`) over its completed runs, and
    those scores; None without a grid or with fewer than two points to compare."""
    keys = grid_keys_of(columns)
    score = test_score(rows)
    frame = _frame(rows, [*keys, "status", score])
    points = [(p, _values(g, score)) for p, g in group(frame, keys)] if keys else []
    points = [(p, v) for p, v in points if v]
    if len(points) < 2:
        return None
    best, values = min(points, key=lambda pv: mean_std(pv[1])[0])
    return dict(zip(keys, best)), values


@dataclass(frozen=True)
class Curve:
    """One line of a sweep's summary figure: `metric` against the first grid key, for one
    combination of the other keys; mean and sd over seeds at each value."""

    label: str
    xs: list[Any]
    means: list[float]
    sds: list[float]


def curves(columns: list[str], rows: list[dict[str, Any]], metric: str) -> tuple[str, list[Any], list[Curve]]:
    """(first grid key, its values in order, one Curve per combination of the other keys) of the
    completed runs; the sd is 0 at a value with a single run."""
    keys = grid_keys_of(columns)
    x_key, others = keys[0], keys[1:]
    frame = _frame(rows, [*keys, "status", metric])
    xs = [point[0] for point, _ in group(frame, [x_key])]
    done = frame[(frame["status"] == "completed") & ~frame[metric].map(_missing)]
    out = []
    for combo, rows_of in group(done, others):
        points = group(rows_of, [x_key])
        stats = [mean_std(_values(g, metric)) for _, g in points]
        label = ", ".join(f"{k}={fmt(v)}" for k, v in zip(others, combo))
        out.append(Curve(label, [p[0] for p, _ in points], [m for m, _ in stats],
                         [0.0 if math.isnan(sd) else sd for _, sd in stats]))
    return x_key, xs, out
