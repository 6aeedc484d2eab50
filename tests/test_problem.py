import numpy as np
import pytest

from metarep.families.problem import make_problem, sample_heads, sample_tasks


def test_b_star_is_orthonormal_and_seeded():
    a = make_problem(12, 4, rng=np.random.default_rng(3))
    b = make_problem(12, 4, rng=np.random.default_rng(3))
    np.testing.assert_allclose(a.B_star.T @ a.B_star, np.eye(4), atol=1e-12)
    assert np.array_equal(a.B_star, b.B_star)


def test_heads_have_the_configured_moments(general_problem, rng):
    heads = sample_heads(general_problem, 400_000, rng)
    np.testing.assert_allclose(heads.mean(0), general_problem.mu_star, atol=0.01)
    np.testing.assert_allclose(np.cov(heads.T), general_problem.Sigma_star, atol=0.02)


def test_tasks_have_the_documented_shapes_and_labels(general_problem, rng):
    tasks = sample_tasks(general_problem, 6, 4, 3, rng)
    assert tasks.X_in.shape == (6, 4, 7) and tasks.y_in.shape == (6, 4)
    assert tasks.X_out.shape == (6, 3, 7) and tasks.y_out.shape == (6, 3) and tasks.w_star.shape == (6, 3)
    noise_free = make_problem(7, 3, noise_std=0.0, rng=np.random.default_rng(0))
    t = sample_tasks(noise_free, 2, 5, 0, rng)
    np.testing.assert_allclose(t.y_in[1], t.X_in[1] @ noise_free.B_star @ t.w_star[1], atol=1e-12)


def test_label_noise_has_the_configured_variance(rng):
    problem = make_problem(4, 2, task_cov=0.0, noise_std=2.0, rng=rng)
    t = sample_tasks(problem, 20_000, 10, 0, rng)
    assert np.var(t.y_in) == pytest.approx(4.0, rel=0.02)


@pytest.mark.parametrize("kwargs, message", [
    ({"d": 3, "k": 4}, "k must satisfy"),
    ({"d": 5, "k": 2, "task_cov": [1.0, 2.0, 3.0]}, "k=2 entries"),
    ({"d": 5, "k": 2, "task_cov": [1.0, -2.0]}, ">= 0"),
    ({"d": 5, "k": 2, "task_cov": [[1.0, 2.0], [0.0, 1.0]]}, "symmetric"),
    ({"d": 5, "k": 2, "task_mean": [1.0]}, "task_mean"),
])
def test_bad_problems_are_refused(kwargs, message):
    d, k = kwargs.pop("d"), kwargs.pop("k")
    with pytest.raises(ValueError, match=message):
        make_problem(d, k, rng=np.random.default_rng(0), **kwargs)
