"""A CSV column of numbers with a few stray cells (a typo, decimal commas) is refused, naming
the cells, instead of being one-hot encoded into one indicator per distinct number."""

from __future__ import annotations

import numpy as np
import pytest

from metarep.config.schema import ConfigError
from metarep.data.config import DataConfig
from metarep.data.read import load
from metarep.data.table import Columns
from test_data_table import build, make_frame


def _load(tmp_path, text_or_frame, **kw):
    path = tmp_path / "t.csv"
    if isinstance(text_or_frame, str):
        path.write_text(text_or_frame)
    else:
        text_or_frame.to_csv(path, index=False)
    cfg = DataConfig(path=str(path), task="school", target="y", **kw)
    return load(cfg, m_train=5, m_test=3)


def test_one_stray_string_in_a_numeric_column_is_refused_naming_the_cell(tmp_path):
    frame = make_frame()
    frame["x1"] = frame["x1"].astype(object)
    frame.loc[6, "x1"] = "abc"
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, frame)
    text = str(err.value)
    assert "\n" not in text
    assert "data.features: column 'x1' holds numbers but 1 of its" in text and "cells is not (row 7" in text
    assert "row 7: 'abc'" in text and "data.categorical" in text
    # listed as categorical: the user's choice, one indicator per level
    data = _load(tmp_path, frame, categorical=["x1"])
    assert sum(name.startswith("x1=") for name in data.features) == frame["x1"].nunique() - 1


def test_decimal_commas_are_refused_with_a_hint(tmp_path):
    frame = make_frame()
    frame["x0"] = [f"{v:.3f}".replace(".", ",") for v in frame["x0"]]
    with pytest.raises(ConfigError, match=r"column 'x0' holds numbers .*row 1: .*decimal commas\?"):
        _load(tmp_path, frame)


def test_a_text_column_and_a_stray_target_cell():
    frame = make_frame()
    assert "kind=b" in build(frame).features  # a column of words stays categorical
    frame["y"] = frame["y"].astype(object)
    frame.loc[[2, 4], "y"] = "n/a"
    with pytest.raises(ConfigError, match=r"data\.target: column 'y' holds numbers but 2 .*row 3: 'n/a', row 5"):
        build(frame)


def test_an_empty_table_says_it_is_empty(tmp_path):
    with pytest.raises(ConfigError, match=r"data: the table is empty"):
        _load(tmp_path, "school,x0,y\n")
    with pytest.raises(ConfigError, match=r"data\.path: .* is empty"):
        _load(tmp_path, "")
    assert np.isfinite(build(make_frame(), Columns("school", "y")).train.X).all()


def test_a_mostly_numeric_column_with_a_frequent_level_stays_categorical():
    frame = make_frame()
    frame["grade"] = np.where(np.arange(len(frame)) % 4 == 0, "K", (np.arange(len(frame)) % 3 + 1).astype(str))
    features = build(frame, Columns("school", "y", ("x0", "grade"))).features
    assert features == ("x0", "grade=2", "grade=3", "grade=K", "(intercept)")
