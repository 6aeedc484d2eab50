"""Hazards that no numerical test sees: a stale compiled cache, outputs recycled under a live
holder, a thread join, shared random streams, the step a divergence is reported at."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import metarep
from metarep import seeds
from metarep.compute import kernels, threads
from metarep.families.problem import make_problem, sample_tasks

PACKAGE = Path(metarep.__file__).parent
HAVE_NUMBA = kernels.compiled_available()


def _python(code: str, *, path: Path | None = None, env: dict | None = None) -> str:
    """stdout of `code` run in a fresh interpreter (metarep imported from `path` when given)."""
    full = dict(os.environ, **(env or {}))
    if path is not None:
        full["PYTHONPATH"] = os.pathsep.join([str(path), full.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


# ----------------------------------------------------------------------------------------
# The compiled kernels' cache follows every source they are compiled from
# ----------------------------------------------------------------------------------------

BOTH_PATHS = """
    import json
    import numpy as np
    import metarep
    from metarep.linear.params import Params
    from metarep.linear.population import fo_anil_population_gradient
    from metarep.families.problem import make_problem
    assert metarep.__file__.startswith({root!r}), metarep.__file__
    problem = make_problem(5, 2, task_cov=[1.0, 2.0], noise_std=0.5, rng=np.random.default_rng(0))
    rng = np.random.default_rng(1)
    B, w = rng.standard_normal((5, 3)), rng.standard_normal(3)
    _, one = fo_anil_population_gradient(Params(B, w), problem, alpha=0.1, m_in=5)
    _, batch = fo_anil_population_gradient(Params(np.stack([B, B]), np.stack([w, w])), problem, alpha=0.1, m_in=5)
    print(json.dumps([float(one), *map(float, batch)]))
"""


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_NUMBA, reason="numba not installed")
def test_an_edited_formula_reaches_both_compiled_paths(tmp_path):
    """numba's cache checks only the file of the function it compiles: halving the loss in a
    copy of population_formula.py must change the single-run and the batched step alike."""
    root = tmp_path / "pkg"
    shutil.copytree(PACKAGE, root / "metarep", ignore=shutil.ignore_patterns("__pycache__"))
    # NUMBA_OPT=0: the cache's staleness does not depend on the optimisation level, and its own
    # cache directory keeps the unoptimised kernels from ever reaching a real run
    env = {"NUMBA_CACHE_DIR": str(tmp_path / "cache"), "METAREP_THREADS": "1", "NUMBA_OPT": "0"}
    code = BOTH_PATHS.format(root=str(root))
    before = json.loads(_python(code, path=root, env=env))
    formula = root / "metarep" / "linear" / "population_formula.py"
    text = formula.read_text()
    assert text.count("return 0.5 * (risk + s2)") == 1
    formula.write_text(text.replace("return 0.5 * (risk + s2)", "return 0.25 * (risk + s2)"))
    after = json.loads(_python(code, path=root, env=env))
    assert before[0] == before[1] == before[2] > 0
    assert after == pytest.approx([b / 2 for b in before], rel=1e-12)


def _metarep_imports(path: Path) -> set[str]:
    """The metarep modules a source file imports (as file paths relative to the package)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("metarep"):
            base = "/".join(node.module.split(".")[1:])
            for alias in node.names:
                sub = f"{base}/{alias.name}.py" if base else f"{alias.name}.py"
                names.add(sub if (PACKAGE / sub).exists() else f"{base}.py")
        elif isinstance(node, ast.Import):
            names.update("/".join(a.name.split(".")[1:]) + ".py" for a in node.names if a.name.startswith("metarep."))
    return names


def test_the_cache_key_lists_every_source_the_kernels_import():
    from metarep.compute import _compiled
    for name in ("compute/_compiled.py", "compute/_compiled_network.py"):
        missing = _metarep_imports(PACKAGE / name) - set(_compiled.SOURCES)
        assert not missing, f"{name} compiles code from {missing}: add them to _compiled.SOURCES"


@pytest.mark.skipif(not HAVE_NUMBA, reason="numba not installed")
def test_every_kernel_is_cached_under_the_keyed_directory():
    import numba

    from metarep.compute import _compiled, _compiled_network
    where = _compiled.cache_dir()
    kernels_seen = 0
    for module in (_compiled, _compiled_network):
        for value in vars(module).values():
            if isinstance(value, numba.core.registry.CPUDispatcher) and value._cache is not None \
                    and hasattr(value._cache, "_cache_path"):
                kernels_seen += 1
                assert value._cache._cache_path.startswith(where), value
    assert kernels_seen >= 8
    setting = numba.config.CACHE_DIR
    assert setting == os.environ.get("NUMBA_CACHE_DIR", "")     # put back after decorating


# ----------------------------------------------------------------------------------------
# Outputs are the caller's: never handed out again behind its back
# ----------------------------------------------------------------------------------------

HELD_OUTPUT = """
    import sys
    sys.getrefcount = lambda obj: 1        # an interpreter whose counts omit borrowed references
    import numpy as np
    from metarep.compute import kernels
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((40, 6, 5)), rng.standard_normal((40, 6))
    G1, loss1 = kernels.prediction_gradient(X, rng.standard_normal(5), y, backend="numpy")
    kept = G1.copy(), loss1.copy()
    G2, loss2 = kernels.prediction_gradient(X, rng.standard_normal(5), y, backend="numpy")
    print(np.array_equal(G1, kept[0]) and np.array_equal(loss1, kept[1]) and not np.shares_memory(G1, G2))
"""


def test_a_held_output_is_never_overwritten_whatever_the_reference_counts():
    """Outputs used to be recycled when sys.getrefcount said nobody held them: a detail of the
    interpreter (3.14 no longer counts borrowed stack references). Here counts say 'free'."""
    assert _python(HELD_OUTPUT).strip() == "True"


@pytest.mark.parametrize("backend", kernels.available_backends())
def test_outputs_go_where_the_caller_says(backend, rng):
    X, y = rng.standard_normal((70, 6, 5)), rng.standard_normal((70, 6))
    theta = rng.standard_normal(5)
    expected = kernels.prediction_gradient_reference(X, theta, y)
    out = np.full((70, 5), np.nan), np.full(70, np.nan)
    G, loss = kernels.prediction_gradient(X, theta, y, backend=backend, out=out)
    assert G is out[0] and loss is out[1]
    np.testing.assert_allclose(G, expected[0], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(loss, expected[1], rtol=1e-12)
    G_fresh, _ = kernels.prediction_gradient(X, theta, y, backend=backend)
    G_again, _ = kernels.prediction_gradient(X, theta, y, backend=backend)
    assert not np.shares_memory(G_fresh, G_again) and not np.shares_memory(G_fresh, out[0])
    with pytest.raises(ValueError, match="out arrays"):
        kernels.prediction_gradient(X, theta, y, backend=backend, out=(np.empty((70, 4)), np.empty(70)))
    edge = kernels.prediction_gradient(X[:0], theta, y[:0], backend=backend, out=(np.empty((0, 5)), np.empty(0)))
    assert edge[0].shape == (0, 5)


# ----------------------------------------------------------------------------------------
# run_units: the caller waits for the units its helpers hold
# ----------------------------------------------------------------------------------------

UNITS = 6
HELPER_UNIT_SECONDS = 0.3


def _unit_kernel(caller: threading.Thread, helper_took: threading.Event, helpers: bool):
    """A unit kernel in the protocol of `metarep.compute._compiled` (units from counter[0], finished
    ones counted in counter[1], True on the thread that finished the last). A helper's unit
    sleeps; the caller takes none before a helper holds one (or a few seconds passed), so the
    caller always runs out of units while a helper still works."""
    lock = threading.Lock()

    def kernel(out, counter):
        on_caller = threading.current_thread() is caller
        if on_caller and helpers:
            helper_took.wait(5.0)
        last = False
        while True:
            with lock:
                u = int(counter[0])
                counter[0] += 1
            if u >= UNITS:
                return last
            if not on_caller:
                helper_took.set()
                time.sleep(HELPER_UNIT_SECONDS)
            out[u] = (u + 1) ** 2
            with lock:
                counter[1] += 1
                last = int(counter[1]) == UNITS

    return kernel


def _run(monkeypatch, thread_count: int) -> tuple[np.ndarray, bool]:
    monkeypatch.setenv(threads.ENV_VAR, str(thread_count))
    monkeypatch.setattr(threads, "free_cpus", lambda: 1)     # a busy machine: helper threads, not numba's pool
    threads.available.cache_clear()
    try:
        helper_took = threading.Event()
        out = np.zeros(UNITS)
        kernel = _unit_kernel(threading.current_thread(), helper_took, thread_count > 1)
        threads.run_units(kernel, UNITS, True, out)
        finished = out.copy()
    finally:
        threads.available.cache_clear()
    return finished, helper_took.is_set()


def test_run_units_waits_for_its_helpers(monkeypatch):
    one, helped = _run(monkeypatch, 1)
    assert not helped and np.array_equal(one, (np.arange(UNITS) + 1.0) ** 2)
    two, helped = _run(monkeypatch, 2)
    assert helped, "no helper thread took a unit"
    assert np.array_equal(two, one), "run_units returned before a helper finished its unit"


def test_run_units_surfaces_a_helper_failure(monkeypatch):
    monkeypatch.setenv(threads.ENV_VAR, "2")
    monkeypatch.setattr(threads, "free_cpus", lambda: 1)
    threads.available.cache_clear()
    caller = threading.current_thread()

    def kernel(counter):
        if threading.current_thread() is not caller:
            counter[0] = 1
            raise RuntimeError("helper failed")
        time.sleep(0.2)
        return False

    try:
        with pytest.raises(RuntimeError, match="helper failed"):
            threads.run_units(kernel, 2, True)
    finally:
        threads.available.cache_clear()


# ----------------------------------------------------------------------------------------
# Random streams
# ----------------------------------------------------------------------------------------

def test_streams_are_distinct_and_draw_different_numbers():
    ids = list(seeds.STREAMS.values())
    assert len(set(ids)) == len(ids)
    first = {name: seeds.rng(7, name).integers(0, 2**63, 4).tolist() for name in seeds.STREAMS}
    assert len({tuple(v) for v in first.values()}) == len(first)
    with pytest.raises(ValueError, match=r"share the ids \[0\]"):
        seeds._distinct({"a": 0, "b": 1, "c": 0})
    assert seeds._distinct({"a": 0, "b": 1}) == {"a": 0, "b": 1}


def test_existing_stream_ids_never_change():
    """Every id enters every number drawn from its stream: the recorded results depend on them."""
    fixed = {"problem": 0, "init": 1, "train_tasks": 2, "online_tasks": 3, "test_tasks": 4, "fit": 5,
             "data_split": 6, "data_rows": 7, "probe": 8, "eval_inputs": 9}
    assert {name: seeds.STREAMS[name] for name in fixed} == fixed


def test_test_tasks_differ_from_training_tasks_under_one_seed():
    problem = make_problem(4, 2, task_cov=[1.0, 2.0], rng=seeds.rng(0, "problem"))
    seed = 5                                         # test.seed == train.seed
    drawn = {name: sample_tasks(problem, 3, 4, 4, seeds.rng(seed, name))
             for name in seeds.STREAMS if name.endswith("_tasks")}
    assert {"train_tasks", "test_tasks", "online_tasks"} <= set(drawn)
    X = {name: tasks.X_in for name, tasks in drawn.items()}
    for a in X:
        for b in X:
            assert a == b or not np.allclose(X[a], X[b]), (a, b)


# ----------------------------------------------------------------------------------------
# The step a divergence is reported at
# ----------------------------------------------------------------------------------------

GROWING = {"problem": {"d": 6, "k": 2, "task_cov": [1.0, 2.0], "seed": 3},
           "model": {"width": 6, "init_scale": 0.1},
           "method": {"name": "fo-anil"},
           "train": {"tasks": "inf", "m_in": 5, "steps": 8, "log_every": 1, "beta": 0.5, "seed": 0},
           "test": {"tasks": 20, "m_test": 5}}


def _largest_param(steps: int) -> float:
    result = metarep.run({**GROWING, "train": {**GROWING["train"], "steps": steps}})
    assert result.status == "completed"
    return max(float(np.abs(a).max()) for a in result.params.values())


def test_divergence_is_reported_at_the_step_whose_parameters_ran_away():
    """Parameters after s steps beyond the threshold: 'diverged at step s'."""
    sizes = [_largest_param(s) for s in range(1, 6)]               # after 1, ..., 5 steps
    assert all(a < b for a, b in zip(sizes, sizes[1:])), sizes
    s = 4
    threshold = 0.5 * (sizes[s - 2] + sizes[s - 1])
    result = metarep.run({**GROWING, "train": {**GROWING["train"], "diverge_threshold": threshold}})
    assert result.status == "diverged"
    assert result.summary["diverged_step"] == s, (sizes, threshold)
    assert f"diverged at step {s}:" in result.summary["message"]
