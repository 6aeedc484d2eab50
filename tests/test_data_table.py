"""Tables into tasks: the split is by task and seeded, statistics come from training tasks only,
and bad input is refused with one line naming the problem."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from metarep.config.schema import ConfigError
from metarep.data.config import DataConfig
from metarep.data.read import load, read_file
from metarep.data.table import Columns, prepare, split_tasks


def make_frame(n_tasks=12, rows=(8, 30), d=3, seed=0, shift_tasks=()):
    """Tasks of random sizes with numeric features x0.., a categorical 'kind' and a target."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(*rows, size=n_tasks)
    task = np.repeat([f"t{i:02d}" for i in range(n_tasks)], sizes)
    X = rng.standard_normal((len(task), d))
    for name in shift_tasks:  # tasks far from the rest: leaking them would move the statistics
        X[task == name] = 100 + 10 * X[task == name]
    frame = pd.DataFrame(X, columns=[f"x{j}" for j in range(d)])
    frame.insert(0, "school", task)
    frame["kind"] = rng.choice(["a", "b", "c"], size=len(task))
    frame["y"] = X @ np.arange(1, d + 1) + rng.standard_normal(len(task))
    return frame


COLUMNS = Columns(task="school", target="y")


def build(frame, columns=COLUMNS, seed=0, **kw):
    opts = dict(m_train=5, min_heldout_rows=4, test_fraction=0.25, missing="refuse", standardize=True, intercept=True)
    opts.update(kw)
    return prepare(frame, columns, rng_split=np.random.default_rng([seed, 6]),
                   rng_rows=np.random.default_rng([seed, 7]), **opts)


def test_split_is_by_task_and_keeps_every_row():
    frame = make_frame()
    data = build(frame)
    train, held = set(data.train.names), set(data.heldout.names)
    assert not train & held and train | held == set(frame.school)
    assert len(held) == 3  # round(0.25 * 12)
    for tasks in (data.train, data.heldout):
        sizes = frame.groupby("school").size()
        assert list(tasks.sizes) == [sizes[name] for name in tasks.names]
        # every row of a task is one of that task's rows (targets identify them), in a shuffled order
        raw_y = frame.y.to_numpy()
        for i, name in enumerate(tasks.names):
            y = tasks.y[tasks.offsets[i]:tasks.offsets[i + 1]] * data.standardizer.y_scale + data.standardizer.y_mean
            np.testing.assert_allclose(np.sort(y), np.sort(raw_y[frame.school == name]), rtol=1e-12)
    assert data.counts["rows"] == len(frame) and data.counts["tasks"] == 12


def test_rows_are_shuffled_within_each_task_by_the_seed():
    frame = make_frame()
    a, b, c = build(frame), build(frame), build(frame, seed=1)
    name = a.train.names[0]
    raw = frame.y[frame.school == name].to_numpy()

    def rows(data):
        tasks = data.train if name in data.train.names else data.heldout
        i = tasks.names.index(name)
        return tasks.y[tasks.offsets[i]:tasks.offsets[i + 1]] * data.standardizer.y_scale + data.standardizer.y_mean

    np.testing.assert_array_equal(rows(a), rows(b))
    assert not np.allclose(rows(a), raw) and not np.allclose(rows(a), rows(c))
    np.testing.assert_allclose(np.sort(rows(a)), np.sort(raw), rtol=1e-12)


def test_split_is_seeded_and_depends_on_the_seed_only():
    a, b, c = (split_tasks(50, 0.2, np.random.default_rng([s, 6])) for s in (0, 0, 1))
    assert np.array_equal(a, b) and not np.array_equal(a, c) and len(a) == 10
    frame = make_frame()
    assert build(frame).heldout.names == build(frame.sample(frac=1.0, random_state=3)).heldout.names
    assert build(frame).heldout.names != build(frame, seed=5).heldout.names


def test_standardisation_uses_training_tasks_only():
    frame = make_frame(seed=1)
    held = build(frame).heldout.names
    shifted = make_frame(seed=1, shift_tasks=held)  # the held-out tasks far away from the rest
    data = build(shifted)
    assert data.heldout.names == held
    train_rows = shifted[shifted.school.isin(data.train.names)]
    expected = train_rows[["x0", "x1", "x2"]].to_numpy()
    np.testing.assert_allclose(data.standardizer.mean[:3], expected.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(data.standardizer.scale[:3], expected.std(axis=0), rtol=1e-12)
    np.testing.assert_allclose(data.standardizer.y_mean, train_rows.y.mean(), rtol=1e-12)
    np.testing.assert_allclose(data.train.X[:, :3].mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(data.train.X[:, :3].std(axis=0), 1, rtol=1e-12)
    assert data.heldout.X[:, :3].mean() > 50  # held-out rows are transformed, not used


def test_one_hot_and_intercept():
    data = build(make_frame())
    assert data.features == ("x0", "x1", "x2", "kind=b", "kind=c", "(intercept)")
    np.testing.assert_array_equal(data.train.X[:, -1], 1.0)
    no_intercept = build(make_frame(), intercept=False, standardize=False)
    indicators = no_intercept.train.X[:, 3:5]
    assert set(np.unique(indicators)) <= {0.0, 1.0} and indicators.sum(axis=1).max() == 1
    numeric_as_category = build(make_frame().assign(grade=lambda f: f.x0.round().clip(-1, 1)),
                                Columns("school", "y", ("grade", "x1"), ("grade",)))
    assert numeric_as_category.features == ("grade=0", "grade=1", "x1", "(intercept)")


def test_small_tasks_are_dropped_and_counted():
    frame = make_frame(n_tasks=40, rows=(2, 12))
    data = build(frame, m_train=8, min_heldout_rows=6)
    c = data.counts
    assert c["train_tasks"] + c["train_tasks_dropped"] + c["heldout_tasks"] + c["heldout_tasks_dropped"] == 40
    assert data.train.sizes.min() >= 8 and data.heldout.sizes.min() >= 6
    assert c["train_tasks_dropped"] > 0 and c["heldout_tasks_dropped"] > 0


def _fingerprint(threads: str) -> dict:
    code = ("import hashlib, json, numpy as np, sys; sys.path.insert(0, 'tests');"
            "from test_data_table import make_frame, build;"
            "d = build(make_frame(n_tasks=30));"
            "h = hashlib.sha256(d.train.X.tobytes() + d.heldout.X.tobytes() + d.train.y.tobytes()).hexdigest();"
            "print(json.dumps({'held': list(d.heldout.names), 'hash': h}))")
    env = {**os.environ, "OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(__file__)))
    return json.loads(out.stdout)


def test_split_and_arrays_are_stable_across_runs_and_thread_counts():
    """A fresh process on one thread gives the split and the bytes this one gives (its BLAS on
    every thread the machine has)."""
    import hashlib

    one = _fingerprint("1")
    here = build(make_frame(n_tasks=30))
    digest = hashlib.sha256(here.train.X.tobytes() + here.heldout.X.tobytes() + here.train.y.tobytes()).hexdigest()
    assert one == {"held": list(here.heldout.names), "hash": digest}


# --- bad input: one line naming the problem ----------------------------------------------------

def refused(match, frame, columns=COLUMNS, **kw):
    with pytest.raises(ConfigError, match=match) as err:
        build(frame, columns, **kw)
    assert "\n" not in str(err.value)


def test_missing_column():
    refused(r"data\.target: no column 'score'", make_frame(), Columns("school", "score"))
    refused(r"data\.task: no column 'class'", make_frame(), Columns("class", "y"))
    refused(r"data\.features: no column 'x9'", make_frame(), Columns("school", "y", ("x0", "x9")))


def test_non_numeric_target():
    refused(r"data\.target: column 'kind' is not numeric", make_frame(), Columns("school", "kind"))


def test_missing_values_refused_or_dropped_with_the_count():
    frame = make_frame()
    frame.loc[[3, 7, 11], "x1"] = np.nan
    frame.loc[[7, 20], "y"] = np.nan
    refused(r"data: 4 rows have missing values \(x1: 3, y: 2\); set data\.missing = \"drop\"", frame)
    data = build(frame, missing="drop")
    assert data.counts["rows_missing_dropped"] == 4 and data.counts["rows"] == len(frame)
    assert data.train.sizes.sum() + data.heldout.sizes.sum() == len(frame) - 4
    # a missing value in a column that is not used is no reason to refuse
    build(frame, Columns("school", "x0", ("x2",)))


def test_a_single_task_and_too_few_tasks():
    frame = make_frame()
    refused(r"single task", frame[frame.school == "t00"])
    refused(r"too few tasks after filtering: \d+ training tasks with >= 100 rows", frame, m_train=100)
    refused(r"held-out tasks with >= 90 rows", frame, min_heldout_rows=90)


def test_infinite_target_and_constant_features():
    frame = make_frame()
    frame.loc[5, "y"] = np.inf
    refused(r"target column 'y' has 1 infinite values", frame)
    refused(r"every feature is constant", make_frame().assign(c="same"), Columns("school", "y", ("c",)))


def test_files(tmp_path):
    frame = make_frame()
    frame.to_csv(tmp_path / "t.csv", index=False)
    cfg = DataConfig(path=str(tmp_path / "t.csv"), task="school", target="y", features=["x0", "x1", "kind"])
    data = load(cfg, m_train=5, m_test=3)
    assert data.features == ("x0", "x1", "kind=b", "kind=c", "(intercept)")
    with pytest.raises(ConfigError, match=r"data\.path: no such file"):
        read_file(str(tmp_path / "nope.csv"))
    (tmp_path / "bad.csv").write_bytes(b"\xff\xfe\x00a,b\n\x00\x01")
    with pytest.raises(ConfigError, match=r"data\.path: .* is not a readable CSV"):
        read_file(str(tmp_path / "bad.csv"))
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ConfigError, match=r"is empty"):
        read_file(str(tmp_path / "empty.csv"))


def test_parquet(tmp_path):
    pytest.importorskip("pyarrow")
    make_frame().to_parquet(tmp_path / "t.parquet")
    assert read_file(str(tmp_path / "t.parquet")).equals(make_frame())
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not parquet PAR1")
    with pytest.raises(ConfigError, match="is not a readable Parquet file"):
        read_file(str(tmp_path / "bad.parquet"))


def test_parquet_without_pyarrow_says_so(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # `import pyarrow` raises ImportError
    (tmp_path / "t.parquet").write_bytes(b"PAR1")
    with pytest.raises(ConfigError, match="needs pyarrow, which is not installed"):
        read_file(str(tmp_path / "t.parquet"))


@pytest.mark.parametrize("data, match", [
    ({"test_fraction": 0.3}, r"data\.test_fraction does not apply to data\.source = \"synthetic\""),
    ({"dataset": "exam", "path": "x.csv"}, "either path .* or dataset"),
    ({"source": "dataset", "dataset": "exam", "target": "y"}, r"data\.target does not apply to data\.source = "
                                                              r"\"dataset\" \(only to 'file'\)"),
    ({"path": "a.csv", "task": "t"}, r"data\.target is required"),
    ({"source": "dataset"}, r"data\.dataset is required"),
    ({"path": "a.csv", "task": "t", "target": "t"}, "must be distinct"),
    ({"path": "a.csv", "task": "t", "target": "y", "features": []}, "at least one column"),
])
def test_keys_that_do_not_apply(data, match):
    with pytest.raises(ValueError, match=match):
        DataConfig.model_validate(data)


def test_config_round_trip():
    for data in ({}, {"dataset": "star", "seed": 3}, {"path": "a.csv", "task": "t", "target": "y", "draw": "once"}):
        cfg = DataConfig.model_validate(data)
        dumped = {k: v for k, v in cfg.model_dump().items() if v is not None}
        assert DataConfig.model_validate(dumped) == cfg
    assert DataConfig.model_validate({}).model_dump(exclude_none=True) == {"source": "synthetic"}
    assert DataConfig.model_validate({"dataset": "exam"}).missing == "drop"
    assert DataConfig.model_validate({"path": "a", "task": "t", "target": "y"}).missing == "refuse"
