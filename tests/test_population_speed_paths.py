"""The one fast population step (`metarep.linear.population_formula.run_step`, compiled by numba or run
as NumPy, one run or a batch, on any number of threads) against the readable reference that
writes MATH 4 as stated (tests/population_reference.py), run by run."""

import importlib.util

import numpy as np
import pytest

from metarep.compute import kernels, threads
from metarep.families.problem import make_problem
from metarep.linear import population
from metarep.linear.params import Params
from metarep.linear.population import fo_anil_population_gradient, population_step
from population_reference import math4, math4_one

HAVE_NUMBA = importlib.util.find_spec("numba") is not None
PATHS = ["numpy", pytest.param("numba", marks=pytest.mark.skipif(not HAVE_NUMBA, reason="numba not installed"))]


def close(a, b, tol=1e-12):
    a, b = np.asarray(a, float), np.asarray(b, float)
    b = np.broadcast_to(b, a.shape) if b.ndim < a.ndim else b
    scale = max(1.0, float(np.abs(b).max(initial=0.0)))
    return a.shape == b.shape and float(np.abs(a - b).max(initial=0.0)) <= tol * scale


@pytest.fixture
def problem():
    rng = np.random.default_rng(3)
    A = rng.standard_normal((3, 3))
    return make_problem(8, 3, task_mean=[0.7, -0.4, 1.1], task_cov=(A @ A.T / 3 + 0.3 * np.eye(3)).tolist(),
                        noise_std=0.6, rng=rng)


@pytest.fixture
def use_path(monkeypatch):
    """Select how the formula runs: 'numba' compiled (every batch spread over threads), 'numpy'
    as plain NumPy, the path of installs without numba."""
    def select(name):
        monkeypatch.setattr(population, "_HAVE_NUMBA", name == "numba")
        monkeypatch.setattr(population, "PARALLEL_MIN_RUNS", 2)
        monkeypatch.setattr(threads, "available", lambda: 3)
        monkeypatch.setattr(threads, "free_cpus", lambda: 3)
    return select


# (B batch, w batch, alpha, beta, m_in): per-run hyper-parameters, inf, broadcasting in every direction
CASES = [
    ((), (), 0.3, 0.1, 4),
    ((), (), 0.2, 0.05, np.inf),
    ((), (), 0.25, 0.1, "inf"),
    ((6,), (6,), np.linspace(0.05, 0.4, 6), np.linspace(0.02, 0.2, 6), np.array([2, 3, np.inf, 5, 8, 40.0])),
    ((5,), (), 0.2, 0.1, 6),                                   # shared head
    ((), (), np.array([0.1, 0.2, 0.3]), 0.1, 5),               # a hyper-parameter sweep from one start
    ((4,), (4,), 0.2, 0.1, np.array([[3.0], [np.inf]])),       # m_in on its own axis
    ((), (), 0.2, np.array([0.05, 0.1, 0.2]), 5),              # only beta batched
    ((2, 3), (3,), np.array([[0.1], [0.3]]), 0.1, np.inf),
]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", range(len(CASES)))
def test_step_and_gradient_match_math4(problem, use_path, path, case):
    use_path(path)
    bB, bw, alpha, beta, m_in = CASES[case]
    rng = np.random.default_rng(case)
    kp = 6                                                      # k' < d = 8
    B = rng.standard_normal(bB + (problem.d, kp)) * 0.6
    w = rng.standard_normal(bw + (kp,)) * 0.5
    ref = math4(B, w, problem, alpha, beta, m_in)
    new, loss = population_step(Params(B, w), problem, alpha=alpha, beta=beta, m_in=m_in)
    grads, gloss = fo_anil_population_gradient(Params(B, w), problem, alpha=alpha, m_in=m_in)

    a, be = np.asarray(alpha), np.asarray(beta)
    m = np.asarray(float(m_in) if isinstance(m_in, str) else m_in)
    assert new.B.shape == np.broadcast_shapes(bB, bw, a.shape, m.shape, be.shape) + (problem.d, kp)
    assert new.w.shape == np.broadcast_shapes(bB, bw, a.shape, be.shape) + (kp,)
    assert np.shape(loss) == np.broadcast_shapes(bB, bw, a.shape, m.shape)
    assert grads.B.shape == np.broadcast_shapes(bB, bw, a.shape, m.shape) + (problem.d, kp)
    assert grads.w.shape == np.broadcast_shapes(bB, bw, a.shape) + (kp,)
    assert np.shape(gloss) == np.shape(loss)
    if np.ndim(loss) == 0:
        assert isinstance(loss, float) and isinstance(gloss, float)

    # results that do not depend on an input's axis are taken at index 0 of that axis
    def cut(x, shape, core):
        full = x.shape[: x.ndim - core]
        lead = len(full) - len(shape)
        index = tuple(0 if i < lead else (slice(None) if shape[i - lead] == f else slice(0, 1))
                      for i, f in enumerate(full))
        return x[index]

    assert close(new.B, ref["B"])
    assert close(new.w, cut(ref["w"], new.w.shape[:-1], 1))
    assert close(loss, cut(ref["loss"], np.shape(loss), 0))
    grad_B_ref = cut(ref["grad_B"], grads.B.shape[:-2], 2)
    assert close(grads.B, grad_B_ref)
    assert close(grads.w, cut(ref["grad_w"], grads.w.shape[:-1], 1))
    assert close(gloss, cut(ref["loss"], np.shape(gloss), 0))


@pytest.mark.parametrize("path", PATHS)
def test_batched_paths_equal_one_run_at_a_time(problem, use_path, path):
    """The paper's widths (k' = d) with many runs: every batched run equals the same run alone."""
    use_path(path)
    rng = np.random.default_rng(5)
    S, d = 20, problem.d
    B = rng.standard_normal((S, d, d)) / np.sqrt(d)
    w = rng.standard_normal((S, d)) * 0.3
    alpha = rng.uniform(0.05, 0.5, S)
    beta = rng.uniform(0.01, 0.2, S)
    m_in = np.where(np.arange(S) % 4 == 0, np.inf, rng.integers(2, 30, S))
    params = Params(B, w)
    singles = [Params(B[s], w[s]) for s in range(S)]
    for _ in range(5):
        params, loss = population_step(params, problem, alpha=alpha, beta=beta, m_in=m_in)
        out = [population_step(p, problem, alpha=alpha[s], beta=beta[s], m_in=m_in[s])
               for s, p in enumerate(singles)]
        singles = [o[0] for o in out]
        for s in range(S):
            assert close(params.B[s], singles[s].B, 1e-13) and close(params.w[s], singles[s].w, 1e-13)
            assert close(loss[s], out[s][1], 1e-13)


def test_numba_and_numpy_batches_agree(problem, use_path):
    if not HAVE_NUMBA:
        pytest.skip("numba not installed")
    rng = np.random.default_rng(8)
    B = rng.standard_normal((17, problem.d, 7))
    w = rng.standard_normal((17, 7))
    kw = {"alpha": rng.uniform(0.1, 0.3, 17), "beta": 0.05, "m_in": np.where(rng.random(17) < 0.3, np.inf, 4.0)}
    use_path("numpy")
    a, la = population_step(Params(B, w), problem, **kw)
    use_path("numba")
    b, lb = population_step(Params(B, w), problem, **kw)
    assert close(a.B, b.B, 1e-13) and close(a.w, b.w, 1e-13) and close(la, lb, 1e-13)


def test_the_kernel_backend_plays_no_part(problem):
    """Population runs are identical, bit for bit, under both kernel backends."""
    rng = np.random.default_rng(4)
    params = Params(rng.standard_normal((20, problem.d, 6)), rng.standard_normal((20, 6)))
    out = {}
    for name in kernels.available_backends():
        with kernels.use(name):
            new, loss = population_step(params, problem, alpha=0.2, beta=0.1, m_in=5)
        out[name] = (new.B, new.w, loss)
    for B, w, loss in out.values():
        assert np.array_equal(B, out["numpy"][0]) and np.array_equal(w, out["numpy"][1])
        assert np.array_equal(loss, out["numpy"][2])


@pytest.mark.parametrize("path", PATHS)
def test_bit_identical_across_thread_counts(problem, use_path, path):
    use_path(path)
    rng = np.random.default_rng(6)
    params = Params(rng.standard_normal((37, problem.d, 6)), rng.standard_normal((37, 6)))
    alpha = rng.uniform(0.1, 0.3, 37)
    runs = []
    for n in (1, 2, 3):
        with threads.limited(n):
            new, loss = population_step(params, problem, alpha=alpha, beta=0.1, m_in=5)
        runs.append((new.B.copy(), new.w.copy(), loss.copy()))
    for B, w, loss in runs[1:]:
        assert np.array_equal(B, runs[0][0]) and np.array_equal(w, runs[0][1]) and np.array_equal(loss, runs[0][2])


def test_non_finite_parameters_stay_non_finite(problem, use_path):
    """A diverged run must stay visibly diverged on every path."""
    for path in ["numpy"] + (["numba"] if HAVE_NUMBA else []):
        use_path(path)
        B = np.ones((3, problem.d, 4))
        B[1, 0, 0] = np.nan
        B[2, 1, 1] = np.inf
        with np.errstate(all="ignore"):
            new, loss = population_step(Params(B, np.zeros((3, 4))), problem, alpha=0.1, beta=0.1, m_in=5)
        assert np.isfinite(new.B[0]).all() and np.isfinite(loss[0])
        assert not np.isfinite(new.B[1]).all() and not np.isfinite(new.B[2]).all()


def test_problem_constants_follow_the_problem(problem):
    """The cached constants are keyed by the problem's content: a changed problem is seen."""
    rng = np.random.default_rng(2)
    B, w = rng.standard_normal((problem.d, 4)), rng.standard_normal(4)
    population_step(Params(B, w), problem, alpha=0.2, beta=0.1, m_in=3)
    problem.mu_star[:] = [0.1, 0.2, -0.3]                   # in place, on purpose
    new, loss = population_step(Params(B, w), problem, alpha=0.2, beta=0.1, m_in=3)
    ref = math4_one(B, w, problem, 0.2, 0.1, 3)
    assert close(new.B, ref["B"]) and close(loss, ref["loss"])
