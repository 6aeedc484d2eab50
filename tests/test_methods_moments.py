"""Method of moments and the two reference points (oracle, no pretraining)."""

import numpy as np
import pytest
from scipy.linalg import subspace_angles

from metarep.config.schema import TrainConfig, validate
from metarep.engine import run
from metarep.families.problem import make_problem, sample_tasks
from metarep.methods import get_method, registered
from metarep.methods.moments import moment_matrix, moments_fit


def _problem(d=10, k=2, seed=0):
    return make_problem(d, k, task_mean=0.0, task_cov=[1.0, 2.0], noise_std=0.5, rng=np.random.default_rng(seed))


def test_moment_matrix_matches_a_sample_loop():
    problem = _problem(d=5)
    tasks = sample_tasks(problem, 7, 3, 2, np.random.default_rng(1))
    X, y = tasks.pooled()
    ref = sum(y[i, j] ** 2 * np.outer(X[i, j], X[i, j]) for i in range(7) for j in range(5)) / 35
    np.testing.assert_allclose(moment_matrix(tasks), ref, rtol=1e-12)


def test_moments_recovers_the_subspace_better_with_more_tasks():
    problem = _problem()
    rng = np.random.default_rng(2)
    sines = []
    for N in (100, 1000, 10_000):
        B = moments_fit(problem, sample_tasks(problem, N, 6, 4, rng), width=2, rng=rng).B
        np.testing.assert_allclose(B.T @ B, np.eye(2), atol=1e-12)
        sines.append(np.sin(subspace_angles(B, problem.B_star).max()))
    assert sines[0] > sines[1] > sines[2]
    assert sines[-1] < 0.1


def test_moments_width_beyond_k_contains_the_subspace():
    problem = _problem()
    tasks = sample_tasks(problem, 5000, 6, 4, np.random.default_rng(3))
    params = moments_fit(problem, tasks, width=4, rng=None)
    assert params.B.shape == (10, 4) and np.all(params.w == 0)
    # B* lies (nearly) inside the span of the top-4 eigenvectors.
    resid = problem.B_star - params.B @ (params.B.T @ problem.B_star)
    assert np.linalg.norm(resid, 2) < 0.1
    with pytest.raises(ValueError):
        moments_fit(problem, tasks, width=11, rng=None)


def test_reference_points():
    problem = _problem()
    tasks = sample_tasks(problem, 3, 2, 2, np.random.default_rng(4))
    oracle = get_method("oracle").fit(problem, tasks, width=7, rng=None)
    np.testing.assert_array_equal(oracle.B, problem.B_star)
    np.testing.assert_array_equal(oracle.w, problem.mu_star)
    none = get_method("none").fit(problem, tasks, width=7, rng=None)
    np.testing.assert_array_equal(none.B, np.eye(10))
    np.testing.assert_array_equal(none.w, np.zeros(10))
    assert get_method("oracle").default_adapt == "bayes"
    assert get_method("none").default_adapt == get_method("moments").default_adapt == "lstsq"


def test_every_declaration_is_consistent_with_its_functions():
    """What a method declares must match what its functions can do (the config and the engine
    read only the declaration)."""
    for m in registered():
        assert m.cost and m.summary
        assert m.iterative != (m.fit is not None), m.name
        assert m.default_adapt in m.adapt_rules, m.name
        assert not (m.infinite_tasks and m.per_task_state), m.name
        assert not m.population_batch or m.infinite_tasks, m.name
        for key in m.train_keys:
            assert key in TrainConfig.model_fields, (m.name, key)
        for key in m.Hyper.model_fields:
            assert key not in TrainConfig.model_fields, (m.name, key)    # its own table, not [train]


def test_direct_methods_take_no_steps():
    direct = [m.name for m in registered("linear") if not m.iterative]
    assert direct
    for name in direct:
        config = validate({"method": {"name": name}, "problem": {"d": 4, "k": 2}, "model": {"width": 2},
                           "train": {"tasks": 20, "steps": 50}, "test": {"tasks": 10}})
        _, state, summary = run(config)
        assert state.step == 0 and len(state.history) == 1 and summary["status"] == "completed"
