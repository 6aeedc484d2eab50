"""From a validated config with a [data] table to the linear experiment's task source: load
the table, check what depends on the data (the method's constraints at the data's d), draw
the fixed rows when they are drawn once, and describe what was loaded."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from metarep import seeds
from metarep.config.schema import ConfigError
from metarep.data.config import validation_fraction
from metarep.data.read import load
from metarep.data.source import TableSource, draw_tasks
from metarep.data.table import TaskData


def table_source(config) -> TableSource:
    """The TableSource of config.data (a file or a bundled dataset), or ConfigError."""
    data_cfg, t = config.data, config.train
    data = load(data_cfg, m_train=t.m_in + t.m_out, m_test=config.test.m_test,
                validation_fraction=validation_fraction(config))
    _check_method(config, data.d)
    fixed = None
    if data_cfg.draw == "once":
        fixed = draw_tasks(data.train, t.m_in, t.m_out, seeds.rng(t.seed, "train_tasks"))
    return TableSource(data, t.m_in, t.m_out, fixed, describe(data_cfg, data))


def _check_method(config, d: int) -> None:
    """The method's own constraints, read with problem.d = the data's d."""
    spec = config.method_spec
    if spec.check is None:
        return
    at_d = config.model_copy(update={"problem": config.problem.model_copy(update={"d": d})})
    try:
        spec.check(at_d)
    except ValueError as err:
        raise ConfigError(f"{err} (d = {d} is the number of features of data.{_named(config.data)})") from None


def _named(data_cfg) -> str:
    return f"dataset = {data_cfg.dataset!r}" if data_cfg.source == "dataset" else f"path = {data_cfg.path!r}"


def describe(data_cfg, data: TaskData) -> dict[str, Any]:
    """What summary.json says about the data: its name, d, the features and the counts."""
    out = {"source": data_cfg.source, "name": data_cfg.dataset or data_cfg.path, "d": data.d,
           "features": list(data.features), "draw": data_cfg.draw, **data.counts}
    if data_cfg.source == "file":  # what was read: a file edited later gives other numbers
        out["sha256"] = hashlib.sha256(Path(data_cfg.path).read_bytes()).hexdigest()
    return out
