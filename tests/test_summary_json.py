"""summary.json is strict JSON: a number with no value (NaN, e.g. the loss of a direct method)
is written null and reads back as None, in the file and in Result.summary alike; Result.save
refuses a non-empty directory unless overwrite=True, as `metarep run --out` does."""

from __future__ import annotations

import json
import math

import pytest

import metarep
from metarep.config.schema import ConfigError
from metarep.storage import store

CONFIG = {"problem": {"d": 6, "k": 2}, "model": {"width": 6}, "method": {"name": "moments"},
          "train": {"tasks": 30, "m_in": 5, "m_out": 5}, "test": {"tasks": 20, "m_test": 5}}


@pytest.fixture(scope="module")
def direct():
    return metarep.run(CONFIG)


def test_nan_is_written_null_and_read_back_as_none(direct, tmp_path):
    assert direct.summary["final"]["loss"] is None  # NaN: a direct method has no training loss
    path = direct.save(tmp_path / "run")
    text = (path / "summary.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}")) == direct.summary
    assert store.read_summary(path)["final"]["loss"] is None
    assert store.json_safe({"a": [float("nan"), -math.inf, 1.5], "b": (2, None)}) == {"a": [None, None, 1.5],
                                                                                      "b": [2, None]}


def test_save_refuses_a_non_empty_directory_unless_overwrite(direct, tmp_path):
    out = direct.save(tmp_path / "run")
    with pytest.raises(ConfigError, match=r"run directory .* is not empty: .*overwrite=True") as err:
        direct.save(out)
    assert "\n" not in str(err.value)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        direct.save(out)
    assert direct.save(out, overwrite=True) == out
    assert (out / "summary.json").exists() and (out / "notes.txt").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="not a directory"):
        direct.save(tmp_path / "file")
    direct.save(tmp_path / "new" / "dir")  # a fresh (nested) directory is fine


def test_the_run_report_says_none_for_a_number_without_value(direct, tmp_path):
    from metarep.report import write_report

    out = direct.save(tmp_path / "run")
    write_report(out)
    assert "| loss " in (out / "report.md").read_text()
    line = next(row for row in (out / "report.md").read_text().splitlines() if row.startswith("| loss "))
    assert line.split("|")[2].strip() == "none"


def test_a_summary_written_with_nan_by_an_earlier_version_reads_none_too(direct, tmp_path):
    out = direct.save(tmp_path / "run")
    text = (out / "summary.json").read_text().replace('"loss": null', '"loss": NaN')
    (out / "summary.json").write_text(text)
    assert store.read_summary(out)["final"]["loss"] is None
    assert metarep.load(out).summary["final"]["loss"] is None
