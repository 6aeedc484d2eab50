"""The prediction-gradient kernel backends against the plain NumPy reference."""

import importlib.util
import threading
import time

import numpy as np
import pytest

from metarep.compute import kernels, threads
from metarep.linear.primitives import prediction_gradient_reference

HAVE_NUMBA = importlib.util.find_spec("numba") is not None
BACKENDS = ["numpy", pytest.param("numba", marks=pytest.mark.skipif(not HAVE_NUMBA, reason="numba not installed"))]

# (N, m, d): m < d, m > d, a single task, a single sample, N not a multiple of any chunk
SHAPES = [(37, 5, 11), (23, 19, 6), (1, 4, 9), (9, 1, 3), (130, 7, 8)]


def backend_fn(name):
    return kernels.numba_prediction_gradient if name == "numba" else kernels.numpy_prediction_gradient


def rel_err(a, b):
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def random_inputs(rng, N, m, d, theta_2d, with_y, dtype=np.float64):
    X = rng.standard_normal((N, m, d)).astype(dtype)
    theta = rng.standard_normal((N, d) if theta_2d else d).astype(dtype)
    y = rng.standard_normal((N, m)).astype(dtype) if with_y else None
    return X, theta, y


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("theta_2d", [False, True])
@pytest.mark.parametrize("with_y", [False, True])
def test_backend_equals_reference(name, shape, theta_2d, with_y, rng):
    X, theta, y = random_inputs(rng, *shape, theta_2d, with_y)
    G, loss = backend_fn(name)(X, theta, y)
    G_ref, loss_ref = prediction_gradient_reference(X, theta, y)
    assert G.shape == G_ref.shape and loss.shape == loss_ref.shape
    assert G.dtype == np.float64 and loss.dtype == np.float64
    assert rel_err(G, G_ref) < 1e-12
    assert rel_err(loss, loss_ref) < 1e-12


@pytest.mark.parametrize("name", BACKENDS)
def test_dispatch_uses_the_selected_backend(name, rng, monkeypatch):
    seen = []
    for backend in ("numba", "numpy"):
        monkeypatch.setattr(kernels, f"{backend}_prediction_gradient",
                            lambda *a, backend=backend, **kw: seen.append(backend))
    X, theta, y = random_inputs(rng, 12, 6, 4, True, True)
    with kernels.use(name) as active:
        assert active == name and kernels.backend() == name
        kernels.prediction_gradient(X, theta, y)
    other = "numpy" if name == "numba" else "numba"
    with kernels.use(other):
        kernels.prediction_gradient(X, theta, y, backend=name)      # the call's choice wins
    assert seen == [name, name]
    assert kernels.backend() == kernels.default_backend()           # the block ended with it


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("theta_2d", [False, True])
def test_float32_stays_float32_with_bounded_error(name, theta_2d, rng):
    X, theta, y = random_inputs(rng, 64, 20, 50, theta_2d, True, np.float32)
    G, loss = backend_fn(name)(X, theta, y)
    assert G.dtype == np.float32 and loss.dtype == np.float32
    # float64 reference on the very same (float32-representable) inputs
    G64, loss64 = prediction_gradient_reference(X.astype(np.float64), theta.astype(np.float64),
                                                y.astype(np.float64))
    bound = 1e-6 if name == "numba" else 2e-5          # numba accumulates in float64
    assert rel_err(G.astype(np.float64), G64) < bound
    assert rel_err(loss.astype(np.float64), loss64) < bound


@pytest.mark.parametrize("name", BACKENDS)
def test_mixed_precision_follows_numpy_promotion(name, rng):
    """float32 tasks with a float64 theta give float64 results, as the reference does."""
    X, _, y = random_inputs(rng, 16, 7, 5, True, True, np.float32)
    theta = rng.standard_normal((16, 5))
    G, loss = backend_fn(name)(X, theta, y)
    G_ref, loss_ref = prediction_gradient_reference(X, theta, y)
    assert G.dtype == G_ref.dtype == np.float64 and loss.dtype == np.float64
    assert rel_err(G, G_ref) < 1e-12 and rel_err(loss, loss_ref) < 1e-12


@pytest.mark.parametrize("name", BACKENDS)
def test_strided_inputs(name, rng):
    X = rng.standard_normal((10, 12, 7))[:, ::2, :]          # not contiguous
    theta = rng.standard_normal((7, 10)).T                   # Fortran-ordered
    y = rng.standard_normal((12, 10)).T[:, ::2]
    G, loss = backend_fn(name)(X, theta, y)
    G_ref, loss_ref = prediction_gradient_reference(X, theta, y)
    assert rel_err(G, G_ref) < 1e-12 and rel_err(loss, loss_ref) < 1e-12


@pytest.mark.parametrize("name", BACKENDS)
def test_non_finite_values_propagate(name, rng):
    """No fast-math flag may hide a diverging run: NaN and inf reach the outputs."""
    X, theta, y = random_inputs(rng, 6, 4, 3, True, True)
    X[2, 1, 0] = np.nan
    theta[4, 1] = np.inf
    G, loss = backend_fn(name)(X, theta, y)
    assert np.isnan(G[2]).any() and np.isnan(loss[2])
    assert not np.isfinite(G[4]).all() and not np.isfinite(loss[4])
    finite = [0, 1, 3, 5]
    G_ref, loss_ref = prediction_gradient_reference(X[finite], theta[finite], y[finite])
    assert rel_err(G[finite], G_ref) < 1e-12 and rel_err(loss[finite], loss_ref) < 1e-12


@pytest.mark.parametrize("name", BACKENDS)
def test_results_held_by_the_caller_are_never_overwritten(name, rng):
    X1, t1, y1 = random_inputs(rng, 20, 5, 4, True, True)
    X2, t2, y2 = random_inputs(rng, 20, 5, 4, True, True)
    fn = backend_fn(name)
    G1, loss1 = fn(X1, t1, y1)
    view = G1[3:]
    G1_copy, view_copy, loss1_copy = G1.copy(), view.copy(), loss1.copy()
    del G1
    G2, _ = fn(X2, t2, y2)
    G3, _ = fn(X1, t1, None)
    assert np.array_equal(view, view_copy)                    # kept alive by the view
    assert np.array_equal(loss1, loss1_copy)
    assert not np.shares_memory(G2, view) and not np.shares_memory(G3, view)
    assert not np.shares_memory(G2, G3)
    assert rel_err(G2, prediction_gradient_reference(X2, t2, y2)[0]) < 1e-12
    assert rel_err(G1_copy[3:], view) == 0.0


@pytest.mark.parametrize("theta_2d", [False, True])
@pytest.mark.parametrize("with_y", [False, True])
def test_numpy_chunks_and_threads_do_not_change_results(theta_2d, with_y, rng):
    X, theta, y = random_inputs(rng, 101, 9, 13, theta_2d, with_y)
    G0, loss0 = kernels.numpy_prediction_gradient(X, theta, y, chunk=10_000, threads=False)
    G0, loss0 = G0.copy(), loss0.copy()
    G_ref, loss_ref = prediction_gradient_reference(X, theta, y)
    assert rel_err(G0, G_ref) < 1e-12 and rel_err(loss0, loss_ref) < 1e-12
    for chunk in (1, 7, 64):
        for spread in (False, True):
            G, loss = kernels.numpy_prediction_gradient(X, theta, y, chunk=chunk, threads=spread)
            assert rel_err(G, G0) < 1e-12 and rel_err(loss, loss0) < 1e-12


@pytest.mark.skipif(not HAVE_NUMBA, reason="numba not installed")
@pytest.mark.parametrize("theta_2d", [False, True])
@pytest.mark.parametrize("free", [2, 3])  # 3: every CPU free, numba's pool; 2: helper threads
def test_numba_results_do_not_depend_on_the_thread_count(theta_2d, free, rng, monkeypatch):
    X, theta, y = random_inputs(rng, 517, 20, 50, theta_2d, True)
    assert X.nbytes >= kernels.PARALLEL_MIN_BYTES                   # large enough for threads
    monkeypatch.setattr(threads, "available", lambda: 3)           # even where fewer cores are free
    monkeypatch.setattr(threads, "free_cpus", lambda: free)
    out = []
    for n in (1, 2, 3):
        with threads.limited(n):
            out.append(tuple(a.copy() for a in kernels.numba_prediction_gradient(X, theta, y)))
    for G, loss in out[1:]:
        assert np.array_equal(G, out[0][0]) and np.array_equal(loss, out[0][1])


def fake_unit_kernel(units, seconds, fail_on=None):
    """A stand-in for a compiled unit kernel: takes units from the counter (under a lock, where the
    compiled ones use an atomic add), records which thread did each, sleeps on the first."""
    lock, done_by = threading.Lock(), {}

    def kernel(counter):
        last = False
        while True:
            with lock:
                u = int(counter[0])
                counter[0] += 1
            if u >= units:
                return last
            if u == fail_on:
                raise RuntimeError("unit failed")
            time.sleep(seconds if u == 0 else 0.0)
            with lock:
                done_by[u] = threading.get_ident()
                counter[1] += 1
                last = counter[1] == units
    return kernel, done_by


def test_run_units_shares_units_between_the_caller_and_helpers(monkeypatch):
    monkeypatch.setattr(threads, "available", lambda: 2)
    monkeypatch.setattr(threads, "free_cpus", lambda: 2)           # whatever else the machine runs
    kernel, done_by = fake_unit_kernel(40, 0.2)
    threads.run_units(kernel, 40, True)
    assert sorted(done_by) == list(range(40))                      # every unit once, all finished
    assert len(set(done_by.values())) == 2                         # the second thread took some
    kernel, done_by = fake_unit_kernel(40, 0.0)
    threads.run_units(kernel, 40, False)                           # below the threshold: the caller alone
    assert set(done_by.values()) == {threading.get_ident()}
    with threads.limited(1):
        kernel, done_by = fake_unit_kernel(40, 0.0)
        threads.run_units(kernel, 40, True)
    assert set(done_by.values()) == {threading.get_ident()}


def test_run_units_raises_what_a_helper_raised(monkeypatch):
    monkeypatch.setattr(threads, "available", lambda: 2)
    monkeypatch.setattr(threads, "free_cpus", lambda: 2)           # whatever else the machine runs
    kernel, _ = fake_unit_kernel(4, 0.2, fail_on=1)               # the caller sleeps on unit 0
    with pytest.raises(RuntimeError, match="unit failed"):
        threads.run_units(kernel, 4, True)


def test_edge_cases_match_the_reference(rng):
    for name in ["numpy"] + (["numba"] if HAVE_NUMBA else []):
        fn = backend_fn(name)
        G, loss = fn(np.zeros((0, 3, 4)), np.zeros(4), None)
        assert G.shape == (0, 4) and loss.shape == (0,)
        with np.errstate(all="ignore"):
            G, loss = fn(np.zeros((2, 0, 4)), np.zeros(4), np.zeros((2, 0)))
            G_ref, loss_ref = prediction_gradient_reference(np.zeros((2, 0, 4)), np.zeros(4), np.zeros((2, 0)))
        np.testing.assert_array_equal(G, G_ref)
        np.testing.assert_array_equal(loss, loss_ref)
        with pytest.raises(ValueError):
            fn(np.zeros((2, 3, 4)), np.zeros(5), None)
        with pytest.raises(ValueError):
            fn(np.zeros((2, 3, 4)), np.zeros(4), np.zeros((2, 4)))


@pytest.fixture
def fresh_default():
    """The default backend read again from the environment, and forgotten afterwards."""
    kernels.default_backend.cache_clear()
    yield
    kernels.default_backend.cache_clear()


def test_backend_selection(fresh_default, monkeypatch):
    for value, want in (("numpy", "numpy"), ("NumPy ", "numpy")):
        monkeypatch.setenv(kernels.ENV_VAR, value)
        kernels.default_backend.cache_clear()
        assert kernels.backend() == want
    monkeypatch.setenv(kernels.ENV_VAR, "fortran")
    kernels.default_backend.cache_clear()
    with pytest.raises(ValueError, match=kernels.ENV_VAR):
        kernels.backend()
    monkeypatch.delenv(kernels.ENV_VAR)
    kernels.default_backend.cache_clear()
    assert kernels.backend() == ("numba" if HAVE_NUMBA else "numpy")
    assert kernels.backend() in kernels.available_backends()
    monkeypatch.setenv(kernels.ENV_VAR, "numpy")                   # read once: a later change is not seen
    assert kernels.backend() == ("numba" if HAVE_NUMBA else "numpy")
    with pytest.raises(ValueError), kernels.use("cuda"):
        pass
    with kernels.use("numpy"):
        with kernels.use(None):                                    # None: the default, inside any block
            assert kernels.backend() == kernels.default_backend()
        assert kernels.backend() == "numpy"


def test_a_backend_chosen_in_a_block_stays_in_its_thread():
    seen = []
    with kernels.use("numpy"):
        worker = threading.Thread(target=lambda: seen.append(kernels.backend()))
        worker.start()
        worker.join()
    assert seen == [kernels.default_backend()]


def test_numba_requested_but_missing(fresh_default, monkeypatch):
    monkeypatch.setattr(kernels, "_numba_importable", lambda: False)
    with pytest.raises(ImportError, match="numba"), kernels.use("numba"):
        pass
    monkeypatch.delenv(kernels.ENV_VAR, raising=False)
    assert kernels.backend() == "numpy"


@pytest.mark.skipif(not HAVE_NUMBA, reason="numba not installed")
@pytest.mark.parametrize("free,pool", [(2, True), (1, False)])
def test_run_units_takes_numba_pool_only_when_every_cpu_is_free(free, pool, monkeypatch):
    """Two CPUs, both free: numba's pool runs the units; one taken by other work: not (the kernel
    then runs on the caller, the one thread launch_count allows)."""
    from metarep.compute import _compiled
    kernel, done_by = fake_unit_kernel(8, 0.0)
    launched = []
    monkeypatch.setitem(_compiled.ON_POOL, kernel, lambda n, counter: launched.append(n) or kernel(counter))
    monkeypatch.setattr(threads, "available", lambda: 2)
    monkeypatch.setattr(threads, "free_cpus", lambda: free)
    threads.run_units(kernel, 8, True)
    assert sorted(done_by) == list(range(8))
    assert launched == ([2] if pool else [])
