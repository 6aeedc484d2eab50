"""`metarep bench --arch mlp` on a tiny setting: every contender's gradient agrees with metarep's
before it is timed, and the report carries the numbers."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from metarep.bench import mlp  # noqa: E402


def test_tiny_benchmark_checks_and_reports():
    result = mlp.run_mlp_bench(n_tasks=6, m_in=3, m_out=2, d=4, width=4, repeats=1, loop_tasks=3, loop_repeats=1,
                                gemm_n=128)
    rows = {r["method"]: r for r in result["rows"]}
    assert set(rows) == {mlp.FIRST_ORDER, mlp.EXACT}
    for row in rows.values():
        assert row["metarep_s"] > 0 and row["flops"] > 0 and row["gemm_fraction"] > 0
        assert row["torch_loop_err"] < 1e-8 and row["torch_loop_s"] > 0
        assert row.get("higher_loop_s") is not None or "skipped" in row.get("higher_loop_note", "")
        # the ceiling (the loop against a step at the whole rate) is the speed-up over the rate's share
        assert row["torch_loop_ceiling"] == pytest.approx(row["speedup_torch_loop"] / row["gemm_fraction"])
    assert rows[mlp.EXACT]["flops"] > rows[mlp.FIRST_ORDER]["flops"]
    report = mlp.format_mlp_report(result)
    assert "| fo-anil" in report.replace(mlp.FIRST_ORDER, "fo-anil") and "load average" in report


def test_the_report_says_what_share_of_the_rate_the_target_asks_for():
    row = {"method": "m", "higher_loop_ceiling": 100.0}
    assert "100x the higher loop, so 100x asks for 100% of the rate" in mlp._targets([row])
    assert "asks for 25% of the rate" in mlp._targets([{**row, "higher_loop_ceiling": 400.0}])
    assert "asks for" not in mlp._targets([{"method": "m"}])


def test_a_wrong_gradient_is_caught():
    ref = (np.ones((2, 2)), np.ones(2))
    assert mlp._check("x", (ref[0] + 1e-12, ref[1]), ref) < 1e-8
    with pytest.raises(AssertionError, match="differs"):
        mlp._check("x", (ref[0] * 1.001, ref[1]), ref)


def test_loops_compute_the_first_and_second_order_gradients():
    """The per-task loops differ between FO-ANIL and ANIL, as metarep's steps do."""
    tasks, params = mlp._setup(5, 3, 2, 4, 4, 0)
    fo = mlp._as_numpy(mlp.torch_loop(params, tasks, alpha=0.3, exact=False)())
    ex = mlp._as_numpy(mlp.torch_loop(params, tasks, alpha=0.3, exact=True)())
    assert np.abs(fo[0] - ex[0]).max() > 1e-4
