"""examples/notebook.py runs from top to bottom as a plain script, and opens as a notebook
(jupytext percent format)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "notebook.py"


def test_the_notebook_runs_as_a_script(tmp_path):
    env = {**os.environ, "TMPDIR": str(tmp_path), "MPLBACKEND": "Agg"}
    done = subprocess.run([sys.executable, str(NOTEBOOK)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Error" not in done.stderr and "bootstrapping" not in done.stderr
    out = done.stdout
    assert "excess_risk" in out and "fo-anil" in out and "burer-monteiro" in out
    sweep = out[out.index("perp_norm"):].splitlines()        # the last table: a row per train.m_in
    assert sweep[1].startswith("train.m_in") and [line.split()[0] for line in sweep[2:]] == ["5", "20"]
    runs = list(tmp_path.glob("metarep-sweep-*/runs/*/summary.json"))
    assert len(runs) == 4


def test_the_notebook_opens_as_a_notebook():
    jupytext = pytest.importorskip("jupytext")
    notebook = jupytext.read(NOTEBOOK)
    kinds = [cell.cell_type for cell in notebook.cells]
    assert kinds.count("code") >= 5 and "markdown" in kinds
