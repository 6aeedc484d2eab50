"""The fused one-inner-step task sums against a plain per-task loop, on both backends."""

import importlib.util

import numpy as np
import pytest

from metarep.compute import kernels, threads
from metarep.linear import one_step

HAVE_FUSED = kernels.compiled_available()
needs_fused = pytest.mark.skipif(not HAVE_FUSED, reason="numba and scipy not installed")

# (N, m_in, m_out, d): fewer tasks than a block, blocks split unevenly over groups, more blocks than groups
SHAPES = [(5, 4, 3, 6), (130, 7, 2, 9), (64 * 40 + 5, 3, 2, 4), (70, 1, 1, 3)]


def loop_sums(X_in, y_in, X_out, y_out, theta, M, P=None, q=0.0):
    """Every quantity of `one_step_sums`, task by task (MATH 3 for one inner step)."""
    N, d = X_in.shape[0], X_in.shape[2]
    g_out, cross, h, loss = np.zeros(d), np.zeros((d, d)), np.zeros(d), 0.0
    for i in range(N):
        X, y, Xo, yo = X_in[i], y_in[i], X_out[i], y_out[i]
        g = X.T @ (X @ theta - y) / len(y)
        theta_i = theta + M @ g + q * (theta @ g) * g
        r = Xo @ theta_i - yo
        gp = Xo.T @ r / len(yo)
        g_out += gp / N
        cross += np.outer(gp, g) / N
        loss += 0.5 * r @ r / len(yo) / N
        if P is not None:
            h += X.T @ (X @ (P @ gp)) / len(y) / N
    return g_out, cross, (h if P is not None else None), loss


def random_case(rng, N, m_in, m_out, d):
    X_in = rng.standard_normal((N, m_in, d))
    X_out = rng.standard_normal((N, m_out, d))
    y_in = rng.standard_normal((N, m_in))
    y_out = rng.standard_normal((N, m_out))
    B = rng.standard_normal((d, d + 1)) / np.sqrt(d)
    P = B @ B.T
    return X_in, y_in, X_out, y_out, rng.standard_normal(d), -0.1 * P, P


def rel_err(a, b):
    return float(np.abs(np.asarray(a) - b).max() / max(np.abs(b).max(), 1e-300))


FUNCTIONS = [one_step.numpy_one_step_sums,
             pytest.param(one_step.numba_one_step_sums, marks=needs_fused)]


@pytest.mark.parametrize("fn", FUNCTIONS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("second_order,q", [(False, 0.0), (True, 0.0), (False, 0.09)])
def test_sums_equal_the_per_task_loop(fn, shape, second_order, q, rng):
    X_in, y_in, X_out, y_out, theta, M, P = random_case(rng, *shape)
    P = P if second_order else None
    out = fn(X_in, y_in, X_out, y_out, theta, M, P, q)
    ref = loop_sums(X_in, y_in, X_out, y_out, theta, M, P, q)
    for got, want in zip(out, ref):
        if want is None:
            assert got is None
        else:
            assert np.shape(got) == np.shape(want)
            assert rel_err(got, want) < 1e-12


@needs_fused
def test_float32_data_bounded_error(rng):
    case = tuple(a.astype(np.float32) for a in random_case(rng, 300, 20, 10, 12))
    out = one_step.numba_one_step_sums(*case)
    ref = loop_sums(*(a.astype(np.float64) for a in case))
    assert out.g_out.dtype == np.float32
    for got, want in zip(out, ref):
        assert rel_err(got, want) < 1e-5


@needs_fused
@pytest.mark.parametrize("free", [2, 3])  # 3: every CPU free, numba's pool; 2: helper threads
def test_results_do_not_depend_on_the_thread_count(free, rng, monkeypatch):
    case = random_case(rng, 64 * 33 + 7, 20, 10, 50)
    monkeypatch.setattr(threads, "available", lambda: 3)           # even where fewer cores are free
    monkeypatch.setattr(threads, "free_cpus", lambda: free)
    out = []
    for n in (1, 2, 3):
        with threads.limited(n):
            out.append(one_step.numba_one_step_sums(*case))
    for other in out[1:]:
        for a, b in zip(out[0], other):
            assert np.array_equal(a, b)


@needs_fused
def test_inputs_the_fused_pass_does_not_take_fall_back(rng, monkeypatch):
    X_in, y_in, X_out, y_out, theta, M, P = random_case(rng, 40, 5, 3, 6)
    ref = loop_sums(X_in, y_in, X_out, y_out, theta, M, P)
    strided = np.repeat(X_in, 2, axis=2)[:, :, ::2]
    assert not strided.flags.c_contiguous
    out = one_step.numba_one_step_sums(strided, y_in, X_out, y_out, theta, M, P)
    assert all(rel_err(a, b) < 1e-12 for a, b in zip(out, ref))
    monkeypatch.setattr(one_step, "_MAX_D", 5)        # too wide for the fused pass's partial sums
    calls = []
    run_units = threads.run_units
    monkeypatch.setattr(threads, "run_units", lambda kernel, *a: calls.append(kernel.__name__) or run_units(kernel, *a))
    out = one_step.numba_one_step_sums(X_in, y_in, X_out, y_out, theta, M, P)
    assert "one_step_units" not in calls and all(rel_err(a, b) < 1e-12 for a, b in zip(out, ref))


@pytest.mark.skipif(importlib.util.find_spec("numba") is None, reason="numba not installed")
def test_dispatch_follows_the_kernel_backend(rng, monkeypatch):
    seen = []
    monkeypatch.setattr(one_step, "numba_one_step_sums", lambda *a, **k: seen.append("numba"))
    monkeypatch.setattr(one_step, "numpy_one_step_sums", lambda *a, **k: seen.append("numpy"))
    monkeypatch.setattr(kernels, "compiled_available", lambda: True)
    case = random_case(rng, 3, 2, 2, 3)
    for name in ("numba", "numpy"):
        with kernels.use(name):
            one_step.one_step_sums(*case)
        one_step.one_step_sums(*case, backend=name)
    assert seen == ["numba", "numba", "numpy", "numpy"]


def test_the_pass_applies_to_one_inner_step_and_wide_representations():
    assert one_step.applies(np.zeros((7, 5)), 1)          # 2 d = 14 < 3 k' = 15
    assert not one_step.applies(np.zeros((7, 4)), 1)
    assert not one_step.applies(np.zeros((7, 9)), 2)
