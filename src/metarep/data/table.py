"""A table of rows grouped by task, turned into standardised per-task row arrays.

`prepare` does, in order: check the columns; refuse or drop rows with missing values; one-hot
encode categorical features (levels from the whole table, first level dropped); draw the
held-out tasks (a seeded permutation of the tasks, never of rows) and, for tuning, validation
tasks among the others (another seeded draw); drop tasks too small for
their role; standardise features and target with the kept training rows only; shuffle the
rows of every task with the seed; append the constant feature. Tasks are ragged: each set is
one (rows, d) array plus offsets, rows of task i at offsets[i]:offsets[i + 1].
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from metarep.config.schema import ConfigError

MIN_TASKS = 2  # per role: a representation needs more than one task, a standard error two


@dataclass(frozen=True)
class TaskSet:
    """Ragged tasks: X (rows, d), y (rows,), offsets (tasks + 1,), one name per task."""

    X: np.ndarray
    y: np.ndarray
    offsets: np.ndarray
    names: tuple[str, ...]

    @property
    def n_tasks(self) -> int:
        return len(self.offsets) - 1

    @property
    def sizes(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def d(self) -> int:
        return self.X.shape[1]

    def task_of_row(self) -> np.ndarray:
        """The task index of every row, (rows,)."""
        return np.repeat(np.arange(self.n_tasks), self.sizes)

    def select(self, index: np.ndarray) -> TaskSet:
        """The tasks at the (sorted) integer `index`, rows kept in their order."""
        sizes = self.sizes[index]
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        rows = np.arange(offsets[-1]) + np.repeat(self.offsets[index] - offsets[:-1], sizes)
        return TaskSet(self.X[rows], self.y[rows], offsets, tuple(self.names[i] for i in index))


@dataclass(frozen=True)
class Standardizer:
    """x -> (x - mean) / scale and y -> (y - y_mean) / y_scale, from training rows only."""

    mean: np.ndarray
    scale: np.ndarray
    y_mean: float
    y_scale: float


@dataclass(frozen=True)
class TaskData:
    """Training and held-out tasks of one table, the feature names, and what was dropped."""

    train: TaskSet
    heldout: TaskSet
    features: tuple[str, ...]
    standardizer: Standardizer
    counts: dict = field(default_factory=dict)
    validation: TaskSet | None = None

    @property
    def d(self) -> int:
        return self.train.d


@dataclass(frozen=True)
class Columns:
    """Which columns play which role; `categorical` are one-hot encoded even when numeric."""

    task: str
    target: str
    features: tuple[str, ...] | None = None
    categorical: tuple[str, ...] = ()


def prepare(frame: pd.DataFrame, columns: Columns, *, m_train: int, min_heldout_rows: int, test_fraction: float,
            missing: str, standardize: bool, intercept: bool, rng_split: np.random.Generator,
            rng_rows: np.random.Generator, where: str = "data", validation_fraction: float = 0.0,
            rng_validation: np.random.Generator | None = None) -> TaskData:
    """TaskData from a table (module docstring). Training tasks keep at least `m_train` rows,
    held-out tasks at least `min_heldout_rows`. With validation_fraction > 0, that share of the
    other tasks (a draw from rng_validation) are validation tasks, kept like held-out ones and
    left out of the training tasks and their statistics. Raises ConfigError naming the problem."""
    features = _check_columns(frame, columns, where)
    frame, n_missing = _missing(frame, [columns.task, columns.target, *features], missing, where)
    design, names = _encode(frame, features, set(columns.categorical))
    target = frame[columns.target].to_numpy(dtype=np.float64)
    if not np.isfinite(target).all():
        raise ConfigError(f"{where}: target column {columns.target!r} has {int((~np.isfinite(target)).sum())} "
                          "infinite values")
    codes, labels = pd.factorize(frame[columns.task], sort=True)
    n_tasks = len(labels)
    if n_tasks < 2:
        raise ConfigError(f"{where}: the table has a single task (column {columns.task!r}): held-out tasks and "
                          "training tasks need at least two")
    sizes = np.bincount(codes, minlength=n_tasks)
    heldout = split_tasks(n_tasks, test_fraction, rng_split)
    is_heldout = np.zeros(n_tasks, dtype=bool)
    is_heldout[heldout] = True
    is_validation = _validation_tasks(is_heldout, validation_fraction, rng_validation)
    is_train = ~is_heldout & ~is_validation
    keep = np.where(is_train, sizes >= m_train, sizes >= min_heldout_rows)
    counts = {"rows": int(len(frame) + n_missing), "rows_missing_dropped": n_missing, "tasks": n_tasks,
              "train_tasks": int((is_train & keep).sum()), "train_tasks_dropped": int((is_train & ~keep).sum()),
              "heldout_tasks": int((is_heldout & keep).sum()), "heldout_tasks_dropped": int((is_heldout & ~keep).sum())}
    if validation_fraction > 0:
        counts.update(validation_tasks=int((is_validation & keep).sum()),
                      validation_tasks_dropped=int((is_validation & ~keep).sum()))
    _enough(counts, m_train, min_heldout_rows, where)
    order = _grouped_order(codes, rng_rows)
    X, y, codes = design[order], target[order], codes[order]
    train_rows = is_train[codes] & keep[codes]
    scaler = _standardizer(X[train_rows], y[train_rows], standardize)
    X = (X - scaler.mean) / scaler.scale
    y = (y - scaler.y_mean) / scaler.y_scale
    if intercept:
        X, names = np.hstack([X, np.ones((len(X), 1))]), (*names, "(intercept)")
    tasks = TaskSet(np.ascontiguousarray(X), y, np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
                    tuple(str(v) for v in labels))
    validation = tasks.select(np.flatnonzero(is_validation & keep)) if validation_fraction > 0 else None
    return TaskData(tasks.select(np.flatnonzero(is_train & keep)), tasks.select(np.flatnonzero(is_heldout & keep)),
                    names, scaler, counts, validation)


def split_tasks(n_tasks: int, test_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """The held-out task indices (sorted): round(test_fraction n) of a seeded permutation,
    at least one and at most n - 1."""
    n_heldout = min(max(int(round(test_fraction * n_tasks)), 1), n_tasks - 1)
    return np.sort(rng.permutation(n_tasks)[:n_heldout])


def _validation_tasks(is_heldout: np.ndarray, fraction: float, rng: np.random.Generator | None) -> np.ndarray:
    """A mask of the validation tasks: `split_tasks` of the tasks not held out (none for fraction 0)."""
    is_validation = np.zeros(len(is_heldout), dtype=bool)
    if fraction > 0:
        assert rng is not None, "validation tasks are drawn with their own generator"
        rest = np.flatnonzero(~is_heldout)
        is_validation[rest[split_tasks(len(rest), fraction, rng)]] = True
    return is_validation


def _check_columns(frame: pd.DataFrame, columns: Columns, where: str) -> tuple[str, ...]:
    names = [str(c) for c in frame.columns]
    listed = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
    wanted = [("task", columns.task), ("target", columns.target)]
    wanted += [("features", c) for c in columns.features or ()] + [("categorical", c) for c in columns.categorical]
    for key, column in wanted:
        if column not in frame.columns:
            raise ConfigError(f"{where}.{key}: no column {column!r} in the table (columns: {listed})")
    if len(frame) == 0:
        raise ConfigError(f"{where}: the table is empty (a header and no rows)")
    target = frame[columns.target]
    if not pd.api.types.is_numeric_dtype(target) or pd.api.types.is_bool_dtype(target):
        _refuse_stray_cells(target, f"{where}.target", "")
        raise ConfigError(f"{where}.target: column {columns.target!r} is not numeric (dtype {target.dtype})")
    features = columns.features or tuple(c for c in frame.columns if c not in (columns.task, columns.target))
    if not features:
        raise ConfigError(f"{where}.features: the table has no column besides task and target")
    stray = sorted(set(columns.categorical) - set(features))
    if stray:
        raise ConfigError(f"{where}.categorical: {stray[0]!r} is not among the features")
    for column in features:
        if column not in columns.categorical:
            _refuse_stray_cells(frame[column], f"{where}.features",
                                f", or list it in {where}.categorical to encode every value as a level")
    return tuple(features)


# A text column is taken for a numeric one with typos when at most STRAY_SHARE of its cells are
# not numbers (a grade column of 1, 2, 3 and 24% "K" is categorical), or when most of its cells
# are numbers written with a decimal comma.
STRAY_SHARE = 0.05


def _refuse_stray_cells(values: pd.Series, key: str, alternative: str) -> None:
    """ConfigError naming the non-numeric cells (data row from 1, value) of a text column of
    numbers with a few stray cells, or of numbers with a decimal comma (STRAY_SHARE): one typo
    would otherwise turn the column into one indicator per distinct number."""
    if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return
    present = values.notna().to_numpy()
    mask = present & pd.to_numeric(values, errors="coerce").isna().to_numpy()
    comma = present & values.astype(str).str.fullmatch(r"\s*[-+]?\d*,\d+\s*").to_numpy()
    n, n_bad = int(present.sum()), int(mask.sum())
    if n_bad == 0 or (n_bad > STRAY_SHARE * n and comma.sum() <= n / 2):
        return
    bad = values[mask]
    rows = np.flatnonzero(mask)[:3] + 1
    cells = ", ".join(f"row {r}: {str(v)[:20]!r}" for r, v in zip(rows, bad.iloc[:3], strict=True))
    more = f" and {n_bad - 3} more" if n_bad > 3 else ""
    hint = "; decimal commas? write 1.5, not 1,5" if comma.any() else ""
    raise ConfigError(f"{key}: column {values.name!r} holds numbers but {n_bad} of its {n} cells "
                      f"{'is' if n_bad == 1 else 'are'} not ({cells}{more}){hint}: fix the cells{alternative}")


def _missing(frame: pd.DataFrame, used: list[str], rule: str, where: str) -> tuple[pd.DataFrame, int]:
    """The table without rows that miss a value in a used column (rule "drop"), or ConfigError
    with the count (rule "refuse")."""
    bad = frame[used].isna()
    rows = bad.any(axis=1)
    n = int(rows.sum())
    if n == 0:
        return frame, 0
    if rule == "refuse":
        worst = bad.sum().sort_values(ascending=False)
        detail = ", ".join(f"{c}: {int(k)}" for c, k in worst.items() if k)[:200]
        raise ConfigError(f"{where}: {n} rows have missing values ({detail}); set {where}.missing = \"drop\" to "
                          "drop them")
    return frame.loc[~rows], n


def _encode(frame: pd.DataFrame, features: tuple[str, ...], categorical: set) -> tuple[np.ndarray, tuple[str, ...]]:
    """The design matrix (rows, d) and its column names: numeric features as they are,
    categorical ones as indicators of every level but the first (levels sorted)."""
    blocks, names = [], []
    for column in features:
        values = frame[column]
        numeric = pd.api.types.is_numeric_dtype(values) and column not in categorical
        if numeric:
            blocks.append(values.to_numpy(dtype=np.float64)[:, None])
            names.append(str(column))
            continue
        block, labels = _one_hot(values)
        if labels:
            blocks.append(block)
            names += [f"{column}={label}" for label in labels]
    if not blocks:
        raise ConfigError(f"data.features: every feature is constant ({', '.join(map(str, features))})")
    return np.hstack(blocks), tuple(names)


def _one_hot(values: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Indicators of every level but the first, (rows, levels - 1), and the levels' labels.
    Levels are sorted by value (numbers) or as text (anything else)."""
    if pd.api.types.is_numeric_dtype(values):
        keys = values.to_numpy(dtype=np.float64) + 0.0  # (-0.0 becomes 0.0: one level)
        levels = np.unique(keys)
        labels = [f"{level:g}" for level in levels]
    else:
        keys = values.astype(str).to_numpy()
        levels = np.unique(keys)
        labels = [str(level) for level in levels]
    block = (keys[:, None] == levels[None, 1:]).astype(np.float64)
    return block, labels[1:]


def _enough(counts: dict, m_train: int, min_heldout_rows: int, where: str) -> None:
    if counts.get("validation_tasks", MIN_TASKS) < MIN_TASKS:
        raise ConfigError(
            f"{where}: too few validation tasks after filtering: {counts['validation_tasks']} with >= "
            f"{min_heldout_rows} rows (test.m_test + 1); need {MIN_TASKS}: raise {where}.validation_fraction or "
            "lower test.m_test")
    if counts["train_tasks"] < MIN_TASKS or counts["heldout_tasks"] < MIN_TASKS:
        raise ConfigError(
            f"{where}: too few tasks after filtering: {counts['train_tasks']} training tasks with >= {m_train} rows "
            f"(train.m_in + train.m_out) and {counts['heldout_tasks']} held-out tasks with >= {min_heldout_rows} "
            f"rows (test.m_test + 1), of {counts['tasks']}; need {MIN_TASKS} of each: lower the sample sizes or "
            f"change {where}.test_fraction")


def _grouped_order(codes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A row order that groups rows by task (in task order) and shuffles them within each task."""
    shuffled = rng.permutation(len(codes))
    return shuffled[np.argsort(codes[shuffled], kind="stable")]


def _standardizer(X: np.ndarray, y: np.ndarray, standardize: bool) -> Standardizer:
    d = X.shape[1]
    if not standardize:
        return Standardizer(np.zeros(d), np.ones(d), 0.0, 1.0)
    scale = X.std(axis=0)
    y_scale = float(y.std())
    # A column constant over the training rows carries nothing to learn from: centred, not scaled.
    return Standardizer(X.mean(axis=0), np.where(scale > 0, scale, 1.0), float(y.mean()),
                        y_scale if y_scale > 0 else 1.0)
