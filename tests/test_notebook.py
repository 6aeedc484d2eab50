"""examples/notebook.py runs from top to bottom, and opens as a notebook (jupytext percent format)."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "notebook.py"


def test_the_notebook_runs(monkeypatch, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    names = runpy.run_path(str(NOTEBOOK), run_name="notebook")  # sweep workers re-import __main__
    assert names["result"].status == "completed"
    table = names["table"]
    assert len(table) == 4 and set(table["status"]) == {"completed"}
    assert sorted(table["train.m_in"].unique()) == [5, 20]


def test_the_notebook_opens_as_a_notebook():
    jupytext = pytest.importorskip("jupytext")
    notebook = jupytext.read(NOTEBOOK)
    kinds = [cell.cell_type for cell in notebook.cells]
    assert kinds.count("code") >= 5 and "markdown" in kinds
