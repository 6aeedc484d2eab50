"""The benchmark harness (`metarep bench`): end to end on tiny sizes, agreement checks, chunked
gradients, and the memory arithmetic. No timing is asserted."""

from __future__ import annotations

import json

import numpy as np
import pytest

from metarep.bench import contenders as contenders_mod
from metarep.bench.bandwidth import measure_read_bandwidth
from metarep.bench.harness import TOLERANCE, BenchConfig, Row, agreement, run_benchmark
from metarep.bench.load import cpu_load
from metarep.bench.machine import machine_info
from metarep.bench.report import TABLE_COLUMNS, format_report
from metarep.bench.scale import measure_step_memory, task_data_bytes, tasks_per_gb
from metarep.bench.targets import TARGET_THREADS_RATIO, evaluate_targets
from metarep.families.tasks import Tasks
from metarep.linear.params import Params
from metarep.methods.anil import anil_gradient
from metarep.methods.fo_anil import fo_anil_gradient

TINY = dict(n_tasks=50, m_in=6, m_out=4, d=8, width=8)


def _tiny(**kw) -> BenchConfig:
    base = dict(TINY, quick=True, pop_steps=200, pop_batch=8)
    base.update(kw)
    return BenchConfig(**base)


@pytest.fixture(scope="module")
def quick_result():
    """One quick run with every contender that is installed, both methods, float64."""
    return run_benchmark(_tiny(dtypes=("float64",)))


def test_quick_run_checks_and_times_every_installed_contender(quick_result):
    res = quick_result
    assert {(r.method, r.contender) for r in res.rows} == {
        (m, c) for m in ("fo-anil", "anil") for c in contenders_mod.CONTENDERS}
    for r in res.rows:
        assert r.status in ("ok", "skipped"), (r.contender, r.status, r.note)
        if r.status == "skipped":           # only for a framework that is not installed
            assert "not installed" in r.note or "needs" in r.note
            assert r.ms is None
            continue
        assert r.error is not None and r.error <= TOLERANCE["float64"], (r.contender, r.error)
        assert r.ms is not None and r.ms > 0 and r.tasks_per_s > 0 and r.gbps > 0
        assert r.ratio is not None and r.ratio > 0
    ref = [r for r in res.rows if r.contender == res.reference]
    assert ref and all(r.ratio == pytest.approx(1.0) for r in ref)


def test_quick_report_has_every_column_and_the_targets(quick_result):
    text = format_report(quick_result)
    header = next(line for line in text.splitlines() if line.startswith("| method"))
    for col in TABLE_COLUMNS:
        assert col in header
    for word in ("## Machine", "cores", "read bandwidth", "## Population", "## Targets"):
        assert word in text
    assert len(quick_result.targets) == 8
    for t in quick_result.targets:
        assert t.status in ("PASS", "FAIL", "n/a")
        assert f"| {t.name} " in text and f"| {t.status} " in text
    pop = quick_result.population
    assert pop["finite"] and pop["batch_error"] < 1e-10 and pop["extrapolated"]
    assert pop["gemm_gflops"] > 0 and pop["batch_speedup_ceiling"] > 0 and "ceiling" in text
    assert pop["batch_gflops"] / pop["single_gflops"] == pytest.approx(pop["batch_speedup"])


def test_population_flop_count_is_dominated_by_two_d_width_squared_products():
    from metarep.linear.population import step_flops

    # at least B^T B and B E[w w^T] (2 d k'^2 multiply-adds each), and little more once d, k' >> k
    for d, k, width in ((50, 5, 50), (20, 3, 10), (400, 5, 400)):
        assert step_flops(d, k, width) > 4 * d * width**2
    assert step_flops(400, 5, 400) / (4 * 400**3) == pytest.approx(1.0, rel=0.05)


def test_cli_quick_float32_writes_json(tmp_path, capsys):
    from metarep.cli import main

    out = tmp_path / "bench.json"
    rc = main(["bench", "--quick", "--quiet", "--n-tasks", "50", "--m-in", "6", "--m-out", "4", "--d", "8",
               "--width", "8", "--dtype", "float32", "--method", "fo-anil", "--contenders",
               "numpy_batched,numpy_loop", "--no-population", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| method" in printed and "numpy_batched" in printed
    data = json.loads(out.read_text())
    names = {r["contender"] for r in data["rows"]}
    assert {"numpy_batched", "numpy_loop", data["reference"]} <= names
    for r in data["rows"]:
        assert r["status"] == "ok" and r["dtype"] == "float32"
        assert r["agreement"] <= TOLERANCE["float32"]
    assert data["machine"]["cores"] >= 1 and data["population"] is None


def test_cli_unknown_contender_is_a_usage_error(capsys):
    from metarep.cli import main

    assert main(["bench", "--quick", "--contenders", "no_such_thing"]) == 2
    assert "unknown contender" in capsys.readouterr().err


def _wrong(X_in, y_in, X_out, y_out, alpha, method, dtype):
    good = contenders_mod.make_numpy_batched(X_in, y_in, X_out, y_out, alpha, method, dtype)

    def step(B, w):
        gB, gw, loss = good(B, w)
        return gB + 1e-6, gw, loss

    return step


def _absent(*args):
    raise ImportError("contender 'absent' needs the 'nothing' package, which is not installed")


def test_disagreeing_contender_is_rejected_and_not_timed(monkeypatch):
    monkeypatch.setitem(contenders_mod.CONTENDERS, "wrong", _wrong)
    monkeypatch.setitem(contenders_mod.CONTENDERS, "absent", _absent)
    res = run_benchmark(_tiny(methods=("fo-anil",), dtypes=("float64",), contenders=("wrong", "absent",
                                                                                       "numpy_batched"),
                              population=False, bandwidth=False))
    rows = {r.contender: r for r in res.rows}
    assert rows["wrong"].status == "rejected" and rows["wrong"].ms is None and rows["wrong"].times == []
    assert rows["wrong"].error > TOLERANCE["float64"]
    assert rows["absent"].status == "skipped" and "not installed" in rows["absent"].note
    assert rows["numpy_batched"].status == "ok"
    text = format_report(res)
    assert "rejected" in text and "skipped" in text


def test_agreement_is_relative_to_max_one_and_value():
    a = (np.array([[1.0, 2.0]]), np.array([3.0]), np.array(0.5))
    assert agreement(a, a) == 0.0
    b = (np.array([[1.0, 2.0]]) * (1 + 1e-12), np.array([3.0]), np.array(0.5))
    assert agreement(b, a) < 1e-11
    assert agreement((np.zeros((1, 3)),) + a[1:], a) == np.inf
    assert agreement((a[0] + np.nan,) + a[1:], a) == np.inf


# -------------------------------------------------------------------------------------------
# Chunks: the outer gradient is a mean over tasks, so chunk means weighted by chunk size must
# reproduce it (the methods themselves take the whole task set; this is the user-level path).
# -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("gradient", [fo_anil_gradient, anil_gradient], ids=["fo-anil", "anil"])
@pytest.mark.parametrize("inner_steps", [1, 2])
def test_chunked_gradient_equals_full_gradient(gradient, inner_steps):
    rng = np.random.default_rng(7)
    N, m_in, m_out, d, k = 103, 7, 5, 9, 6
    tasks = Tasks(rng.standard_normal((N, m_in, d)), rng.standard_normal((N, m_in)),
                  rng.standard_normal((N, m_out, d)), rng.standard_normal((N, m_out)))
    params = Params(rng.standard_normal((d, k)) / 3, rng.standard_normal(k))
    full, full_loss = gradient(params, tasks, alpha=0.2, inner_steps=inner_steps)
    for size in (1, 10, 64, N):
        gB, gw, loss = np.zeros_like(full.B), np.zeros_like(full.w), 0.0
        for chunk in tasks.chunks(size):
            g, chunk_loss = gradient(params, chunk, alpha=0.2, inner_steps=inner_steps)
            f = chunk.n_tasks / N
            gB += f * g.B
            gw += f * g.w
            loss += f * chunk_loss
        assert np.max(np.abs(gB - full.B)) <= 1e-12 * max(1.0, np.max(np.abs(full.B)))
        assert np.max(np.abs(gw - full.w)) <= 1e-12 * max(1.0, np.max(np.abs(full.w)))
        assert loss == pytest.approx(full_loss, rel=1e-12, abs=1e-12)


# -------------------------------------------------------------------------------------------
# Machine, bandwidth, memory
# -------------------------------------------------------------------------------------------

def test_machine_info_and_bandwidth():
    info = machine_info()
    for key in ("cpu_model", "cores", "versions", "blas", "env", "numpy"):
        assert key in info
    assert info["versions"]["numpy"] is not None
    assert measure_read_bandwidth(4e6, repeats=2) > 0
    assert measure_read_bandwidth(4e6, repeats=2, threads=1) > 0
    with pytest.raises(ValueError):
        measure_read_bandwidth(1e6, repeats=0)


def test_settle_pause_is_validated_and_defaults_by_mode():
    from metarep.bench.harness import BenchConfig

    assert BenchConfig().resolved().settle == 0.3 and BenchConfig(quick=True).resolved().settle == 0.0
    with pytest.raises(ValueError, match="settle"):
        BenchConfig(settle=-1.0).resolved()


def test_memory_arithmetic():
    assert task_data_bytes(5000, 20, 10, 50) == 5000 * 30 * 51 * 8          # 61.2 MB, the paper's step
    n = tasks_per_gb(30, 50, 50, working_factor=2.0)
    assert n * (30 * 51 + 2.0 * 100) * 8 <= 1e9 < (n + 1) * (30 * 51 + 2.0 * 100) * 8


@pytest.mark.parametrize("method,bound", [("fo-anil", 4.0), ("anil", 12.0)])
def test_step_working_memory_is_a_few_N_d_plus_k_floats(method, bound):
    r = measure_step_memory(method, n_tasks=400, m_in=10, m_out=5, d=20, width=20)
    unit = 400 * (20 + 20) * 8
    assert r["working_bytes_cold"] > 0 and r["working_bytes_warm"] > 0
    assert r["working_in_N_d_plus_k"] < bound and r["working_bytes_warm"] / unit < bound


def test_reference_follows_the_active_kernel_backend():
    from metarep.compute import kernels

    with kernels.use("numpy"):
        res = run_benchmark(_tiny(methods=("anil",), dtypes=("float64",), contenders=("numpy_loop",),
                                  population=False, bandwidth=False))
    assert res.reference == "metarep[numpy]"
    assert [r.contender for r in res.rows] == ["metarep[numpy]", "metarep[numpy]/1thread", "numpy_loop"]
    assert all(r.status == "ok" and r.error <= TOLERANCE["float64"] for r in res.rows)


def _timed_row(contender: str, ms: float, method: str = "fo-anil") -> Row:
    return Row(method, "float64", contender, "ok", times=[ms / 1e3], task_bytes=10**8, n_tasks=1000)


def _target(targets, start: str):
    return next(t for t in targets if t.name.startswith(start))


@pytest.mark.parametrize("ms,status", [(10.0, "PASS"), (10.0 * TARGET_THREADS_RATIO - 0.01, "PASS"),
                                       (10.0 * TARGET_THREADS_RATIO + 0.01, "FAIL")])
def test_threads_target_compares_the_default_with_the_best_alternative(ms, status):
    """metarep's default must be within TARGET_THREADS_RATIO of the faster of its one-thread
    path (10 ms here) and the NumPy backend (12 ms)."""
    rows = [_timed_row("metarep[numba]", ms), _timed_row("metarep[numba]/1thread", 10.0),
            _timed_row("metarep[numpy]", 12.0)]
    target = _target(evaluate_targets(rows, "metarep[numba]", None, None, load=2), "FO-ANIL float64, 2 CPU-bound")
    assert target.status == status and target.measured == f"{ms / 10.0:.2f}x metarep[numba]/1thread"
    rows[1].times = []                                             # the one-thread path not timed
    target = _target(evaluate_targets(rows, "metarep[numba]", None, None), "FO-ANIL float64, 0 CPU-bound")
    assert target.measured == f"{ms / 12.0:.2f}x metarep[numpy]"
    assert _target(evaluate_targets(rows[:1], "metarep[numba]", None, None), "FO-ANIL float64, 0").status == "n/a"


def test_speed_bandwidth_and_population_targets_pass_and_fail_where_they_should():
    rows = [_timed_row("metarep[numba]", 10.0), _timed_row("numpy_batched", 29.0), _timed_row("torch_func", 10.5)]
    targets = evaluate_targets(rows, "metarep[numba]", 2e10, None, busy_threshold=0.2)
    assert _target(targets, "FO-ANIL float64: metarep[numba] vs plain vectorised NumPy").status == "FAIL"  # 2.9x < 3x
    assert _target(targets, "FO-ANIL float64: metarep[numba] vs torch.func").status == "PASS"           # 1.05x > 1x
    assert _target(targets, "FO-ANIL float64: metarep[numba] vs jax").status == "n/a"                   # not run
    assert _target(targets, "FO-ANIL float64: metarep[numba] effective").status == "PASS"   # 10 GB/s of 20
    assert _target(evaluate_targets(rows, "metarep[numba]", 2.1e10, None), "FO-ANIL float64: metarep[numba] effective"
                   ).status == "FAIL"                                                      # 10 GB/s of 21
    pop = {"d": 50, "width": 50, "seconds_for_target": 9.9, "extrapolated": False, "steps": 10**5, "batch": 256,
           "batch_speedup": 19.9, "batch_speedup_ceiling": 30.0}
    targets = evaluate_targets(rows, "metarep[numba]", None, pop)
    assert _target(targets, "population: 100,000 steps").status == "PASS"
    assert _target(targets, "population: 256 runs").status == "FAIL"
    rows[0].other_cores = 0.5
    assert "(busy)" in _target(evaluate_targets(rows, "metarep[numba]", None, None, busy_threshold=0.2),
                               "FO-ANIL float64: metarep[numba] vs torch.func").measured


def test_cpu_load_runs_and_ends_its_processes():
    with cpu_load(2) as procs:
        assert len(procs) == 2 and all(p.poll() is None for p in procs)
    assert all(p.poll() is not None for p in procs)
    with pytest.raises(ValueError, match="load"):
        BenchConfig(load=-1).validate()


@pytest.mark.parametrize("args, says", [
    (["--load", "-1"], "load: Input should be greater than or equal to 0 (got -1)"),
    (["--n-tasks", "0"], "n_tasks: Input should be greater than or equal to 1 (got 0)"),
    (["--repeats", "0"], "repeats: Input should be greater than or equal to 1 (got 0)"),
])
def test_a_bad_bench_setting_is_one_line_and_exit_2(capsys, args, says):
    from metarep.cli import main

    assert main(["bench", "--quick", "--quiet", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err and "Traceback" not in err


def test_bench_config_is_validated_when_made():
    from metarep.config.schema import ConfigError

    with pytest.raises(ConfigError, match="^dtypes: must be among float64, float32, got 'float16'$"):
        BenchConfig(dtypes=("float16",))
    with pytest.raises(ConfigError, match="unknown setting 'sizes'"):
        BenchConfig(sizes=3)
    with pytest.raises(ConfigError, match="^d: Input should be a valid integer"):
        BenchConfig(d=True)
    assert BenchConfig(quick=True).resolved() == BenchConfig(quick=True).resolved()
