"""metarep.run(out=...) builds its Result from memory: the same object `load` reads back from the
run directory it wrote, and the same as a run without `out` (plus run_dir)."""

from __future__ import annotations

import numpy as np

import metarep
from metarep import api

CONFIG = {"problem": {"d": 5, "k": 2, "task_mean": [0.5, -0.5]}, "model": {"width": 4},
          "train": {"tasks": 12, "m_in": 4, "m_out": 4, "steps": 9, "log_every": 4},
          "test": {"tasks": 20, "m_test": 4}}


def _same(a: api.Result, b: api.Result) -> None:
    assert a.config == b.config and a.history == b.history and a.summary == b.summary
    assert list(a.params) == list(b.params) and all(np.array_equal(a.params[k], b.params[k]) for k in a.params)
    assert (a.problem is None) == (b.problem is None)
    if a.problem is not None:
        assert all(np.array_equal(x, y) for x, y in zip(a.problem, b.problem, strict=True))


def test_run_with_out_is_built_from_memory(tmp_path, monkeypatch):
    reads = []
    monkeypatch.setattr(api, "load", lambda run_dir: reads.append(run_dir))
    result = metarep.run(CONFIG, out=tmp_path / "run")
    assert reads == [] and result.run_dir == tmp_path / "run"
    monkeypatch.undo()
    _same(result, api.load(tmp_path / "run"))
    _same(result, metarep.run(CONFIG))
