"""The random-effects model (metarep.linear.random_effects) and its method: against statsmodels' MixedLM,
against naive per-task loops, the rank-r fit, the BLUP against the oracle's Bayes head, the test
risk against the oracle's, and runs through the CLI (synthetic and a table)."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pandas as pd
import pytest

from metarep.cli import main
from metarep.config.schema import validate
from metarep.engine import run as run_in_memory
from metarep.families.problem import make_problem, sample_tasks
from metarep.linear import adapt
from metarep.linear import random_effects as rfx
from metarep.running import resources


def draw(rng, N, m, mu, G, sigma):
    """N tasks of m rows of y = x^T theta + e, theta ~ N(mu, G): X (N, m, p), y (N, m)."""
    p = len(mu)
    theta = mu + rng.multivariate_normal(np.zeros(p), G, size=N)
    X = rng.standard_normal((N, m, p))
    return X, np.einsum("tmp,tp->tm", X, theta) + sigma * rng.standard_normal((N, m)), theta


# --- against statsmodels ---------------------------------------------------------------------

def grouped_table(rng, groups=40):
    """A random intercept and a random slope: p = 2 with the constant, 5-15 rows per group."""
    sizes = rng.integers(5, 16, size=groups)
    group = np.repeat(np.arange(groups), sizes)
    x = rng.standard_normal(len(group))
    effects = np.array([1.0, -0.5]) + rng.multivariate_normal([0, 0], [[1.0, 0.3], [0.3, 0.5]], size=groups)
    y = effects[group, 0] + effects[group, 1] * x + 0.7 * rng.standard_normal(len(group))
    X = np.column_stack([np.ones_like(x), x])
    return X, y, group, np.concatenate([[0], np.cumsum(sizes)])


def test_the_fit_and_the_blups_match_statsmodels_mixedlm():
    from statsmodels.regression.mixed_linear_model import MixedLM

    rng = np.random.default_rng(0)
    X, y, group, offsets = grouped_table(rng)
    ours = rfx.fit_prior(rfx.ragged_stats(X, y, offsets), max_iter=20_000, tol=1e-15)
    theirs = MixedLM(y, X, groups=group, exog_re=X).fit(reml=False, method="bfgs", maxiter=10_000, gtol=1e-8)
    assert rfx.loglik(ours, rfx.ragged_stats(X, y, offsets)) == pytest.approx(theirs.llf, rel=1e-9)
    np.testing.assert_allclose(ours.mu, theirs.fe_params, rtol=1e-4)
    np.testing.assert_allclose(ours.G, np.asarray(theirs.cov_re), rtol=1e-4)
    np.testing.assert_allclose(ours.sigma2, theirs.scale, rtol=1e-4)
    # the BLUPs of the fitted groups (statsmodels' random_effects: theta - mu) ...
    blups = np.array([rfx.posterior_mean(ours, X[None, a:b], y[None, a:b])[0] - ours.mu
                      for a, b in zip(offsets[:-1], offsets[1:], strict=True)])
    np.testing.assert_allclose(blups, np.array([theirs.random_effects[g] for g in range(40)]), rtol=1e-4, atol=1e-6)
    # ... and of new groups, against statsmodels' parameters in the textbook formula
    Xn, yn, _, _ = grouped_table(np.random.default_rng(1), groups=5)
    Xn, yn = Xn[:30].reshape(5, 6, 2), yn[:30].reshape(5, 6)
    mu, G, s2 = np.asarray(theirs.fe_params), np.asarray(theirs.cov_re), theirs.scale
    expected = [mu + G @ x.T @ np.linalg.solve(x @ G @ x.T + s2 * np.eye(6), t - x @ mu) for x, t in zip(Xn, yn,
                                                                                                      strict=True)]
    np.testing.assert_allclose(rfx.posterior_mean(ours, Xn, yn), expected, rtol=1e-4)


@pytest.mark.parametrize("case", ["grouped", "boundary"])
def test_em_never_loses_likelihood(case):
    """Also where the extrapolation overshoots: a zero G (the boundary), fewer rows than p."""
    rng = np.random.default_rng(2)
    if case == "grouped":
        X, y, _, offsets = grouped_table(rng)
        stats = rfx.ragged_stats(X, y, offsets)
    else:
        X, y, _ = draw(rng, 300, 3, np.ones(5), np.zeros((5, 5)), 0.5)
        stats = rfx.task_stats(X, y)
    for rank in (None, 1):
        lls = [rfx.loglik(rfx.fit_prior(stats, rank=rank, max_iter=i), stats) for i in range(1, 30)]
        assert np.all(np.diff(lls) >= -1e-9), lls


# --- vectorised against naive loops -----------------------------------------------------------

def test_statistics_match_a_loop_over_tasks():
    rng = np.random.default_rng(3)
    X, y = rng.standard_normal((7, 4, 3)), rng.standard_normal((7, 4))
    stats = rfx.task_stats(X, y)
    for t in range(7):
        np.testing.assert_allclose(stats.XtX[t], X[t].T @ X[t])
        np.testing.assert_allclose(stats.Xty[t], X[t].T @ y[t])
        assert stats.yty[t] == pytest.approx(y[t] @ y[t]) and stats.n[t] == 4
    sizes = np.array([1, 5, 2, 9])
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    Xr, yr = rng.standard_normal((offsets[-1], 3)), rng.standard_normal(offsets[-1])
    ragged = rfx.ragged_stats(Xr, yr, offsets)
    for t, (a, b) in enumerate(zip(offsets[:-1], offsets[1:], strict=True)):
        np.testing.assert_allclose(ragged.XtX[t], Xr[a:b].T @ Xr[a:b])
        np.testing.assert_allclose(ragged.Xty[t], Xr[a:b].T @ yr[a:b])
        assert ragged.yty[t] == pytest.approx(yr[a:b] @ yr[a:b]) and ragged.n[t] == b - a
    B = rng.standard_normal((3, 2))
    projected = rfx.project(stats, B)
    direct = rfx.task_stats(X @ B, y)
    np.testing.assert_allclose(projected.XtX, direct.XtX)
    np.testing.assert_allclose(projected.Xty, direct.Xty)


@pytest.mark.parametrize("m", [3, 9])  # m <= p: the (m, m) solve; m > p: the p-space (Woodbury)
def test_the_blup_matches_a_loop_over_tasks(m):
    rng = np.random.default_rng(4)
    p = 5
    A = rng.standard_normal((p, 2))
    prior = rfx.Prior(rng.standard_normal(p), A @ A.T, 0.3)  # G of rank 2: singular
    X, y = rng.standard_normal((6, m, p)), rng.standard_normal((6, m))
    naive = [prior.mu + prior.G @ x.T @ np.linalg.solve(x @ prior.G @ x.T + 0.3 * np.eye(m), t - x @ prior.mu)
             for x, t in zip(X, y, strict=True)]
    np.testing.assert_allclose(rfx.posterior_mean(prior, X, y), naive, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("m", [2, 6])  # both sides of k = 3
def test_the_blup_is_the_oracle_bayes_head_under_the_true_prior(m):
    problem = make_problem(8, 3, task_mean=0.5, task_cov=[1.0, 2.0, 0.5], noise_std=0.7,
                           rng=np.random.default_rng(5))
    tasks = sample_tasks(problem, 50, m, 0, np.random.default_rng(6))
    prior = rfx.Prior(problem.mu_star, problem.Sigma_star, problem.noise_std**2)
    oracle = adapt.fit_heads("bayes", problem.B_star, problem.mu_star, tasks.X_in, tasks.y_in, problem=problem)
    ours = adapt.fit_heads("bayes", problem.B_star, problem.mu_star, tasks.X_in, tasks.y_in, prior=prior)
    np.testing.assert_allclose(ours, oracle, rtol=1e-10)


# --- the fit ------------------------------------------------------------------------------------

def test_a_rank_r_fit_recovers_a_rank_r_covariance_like_the_full_fit():
    rng = np.random.default_rng(7)
    p, r = 6, 2
    A = rng.standard_normal((p, r))
    mu, G = rng.standard_normal(p), A @ A.T
    X, y, _ = draw(rng, 1500, 12, mu, G, 0.5)
    stats = rfx.task_stats(X, y)
    full, low = rfx.fit_prior(stats), rfx.fit_prior(stats, rank=r)
    assert np.linalg.matrix_rank(low.G, tol=1e-8) == r
    for prior in (full, low):
        assert np.linalg.norm(prior.G - G) < 0.1 * np.linalg.norm(G)
        np.testing.assert_allclose(prior.mu, mu, atol=0.1)
        assert prior.sigma2 == pytest.approx(0.25, rel=0.05)
    truth = rfx.loglik(rfx.Prior(mu, G, 0.25), stats)
    # maximum likelihood: each fit is at least as likely as the truth, the full one the most
    assert rfx.loglik(full, stats) >= rfx.loglik(low, stats) - 1e-6 >= truth - 1e-6
    assert rfx.loglik(full, stats) - rfx.loglik(low, stats) < 20  # the extra directions barely help


def rank_one_problem():
    """p = 4, a G of rank 1 (the boundary), 150 tasks of 6 rows."""
    rng = np.random.default_rng(11)
    a = rng.standard_normal(4)
    X, y, _ = draw(rng, 150, 6, rng.standard_normal(4), np.outer(a, a), 0.5)
    return X, y


def squarem_em_full(stats, iterations):
    """The former full-G fit: EM in theta (mu = mean theta_t, G = mean second moment) with SQUAREM."""
    def em(x):
        L = rfx.factor(x.G)
        post = rfx._posterior(stats, x.mu, L, float(np.exp(x.log_sigma2)))
        theta = x.mu + post.u @ L.T
        dev = post.u - post.u.mean(axis=0)
        G = L @ (dev.T @ dev / len(dev) + post.V.mean(axis=0)) @ L.T
        trace_SV = np.exp(x.log_sigma2) * (L.shape[1] - np.trace(post.V, axis1=1, axis2=2))
        return rfx._Params(theta.mean(axis=0), G, np.log(rfx._sigma2(stats, theta, trace_SV)))

    def prior(x):
        return rfx.Prior(x.mu, x.G, float(np.exp(x.log_sigma2)))

    mu, L, sigma2 = rfx._initial(stats, None)
    x = rfx._Params(mu, L @ L.T, np.log(sigma2))
    for _ in range(iterations):
        x1 = em(x)
        extrapolated = rfx._squarem(x, x1, em(x1), len(mu), -30.0)
        x = max([em(em(x1)), em(extrapolated)], key=lambda z: rfx.loglik(prior(z), stats))
    return prior(x)


def test_the_full_fit_reaches_the_maximum_where_g_lacks_directions():
    """Against a direct optimisation of the marginal likelihood (dense (m, m) covariances, a
    Cholesky factor of G, scipy's BFGS): the fit reaches its log-likelihood within 1e-5; SQUAREM
    EM alone (100 iterations) and a capped fit (3) fall short by more than 1e-2."""
    from scipy.optimize import minimize

    X, y = rank_one_problem()
    stats = rfx.task_stats(X, y)
    p, m = 4, 6
    tril = np.tril_indices(p)

    def minus_loglik(v):
        L = np.zeros((p, p))
        L[tril] = v[p:-1]
        K = X @ L @ L.T @ np.swapaxes(X, 1, 2) + np.exp(v[-1]) * np.eye(m)
        r = y - X @ v[:p]
        return 0.5 * np.sum(m * np.log(2 * np.pi) + np.linalg.slogdet(K)[1]
                            + np.einsum("ti,ti->t", r, np.linalg.solve(K, r[..., None])[..., 0]))

    start = np.concatenate([np.zeros(p), np.eye(p)[tril], [0.0]])
    reference = -minimize(minus_loglik, start, method="BFGS", options={"gtol": 1e-8}).fun
    assert rfx.loglik(rfx.fit_prior(stats), stats) == pytest.approx(reference, abs=1e-5)
    assert rfx.loglik(squarem_em_full(stats, 100), stats) < reference - 1e-2
    assert rfx.loglik(rfx.fit_prior(stats, max_iter=3), stats) < reference - 1e-2


def test_the_gradient_matches_finite_differences_of_the_likelihood():
    """The full fit's objective (tasks in blocks of 7 of 30; 3 rows < p = 4: the q-space of
    R_t): its log-likelihood is loglik's, its gradient central differences of loglik's."""
    rng = np.random.default_rng(12)
    X, y = rng.standard_normal((30, 3, 4)), rng.standard_normal((30, 3))
    stats = rfx.task_stats(X, y)
    mu, L, log_s2 = rng.standard_normal(4), rng.standard_normal((4, 4)), 0.3

    def ll(mu, L, log_s2):
        return rfx.loglik(rfx.Prior(mu, L @ L.T, float(np.exp(log_s2))), stats)

    value, g_mu, g_L, g_s = rfx._objective(stats, rfx._root(stats), mu, L, float(np.exp(log_s2)), block=7)
    assert value == pytest.approx(ll(mu, L, log_s2), rel=1e-12)
    h, E = 1e-6, np.eye(4)
    np.testing.assert_allclose(g_mu, [(ll(mu + h * e, L, log_s2) - ll(mu - h * e, L, log_s2)) / (2 * h) for e in E],
                               rtol=1e-6)
    numeric = [[(ll(mu, L + h * np.outer(a, b), log_s2) - ll(mu, L - h * np.outer(a, b), log_s2)) / (2 * h)
                for b in E] for a in E]
    np.testing.assert_allclose(g_L, numeric, rtol=1e-6, atol=1e-7)
    assert g_s == pytest.approx((ll(mu, L, log_s2 + h) - ll(mu, L, log_s2 - h)) / (2 * h), rel=1e-6)


def test_tasks_with_fewer_rows_than_features_and_a_zero_covariance_fit():
    rng = np.random.default_rng(8)
    p = 10
    X, y, _ = draw(rng, 400, 3, np.ones(p), np.zeros((p, p)), 0.5)  # XtX of rank 3 < p, G = 0
    for rank in (None, 2):
        prior = rfx.fit_prior(rfx.task_stats(X, y), rank=rank)
        assert np.isfinite(prior.G).all() and np.linalg.norm(prior.G) < 0.1
        np.testing.assert_allclose(prior.mu, np.ones(p), atol=0.1)
        assert np.isfinite(rfx.posterior_mean(prior, X[:5], y[:5])).all()


def test_noiseless_tasks_fit_finitely():
    """sigma = 0 drives the maximum-likelihood sigma2 to 0: the fit stops at its floor."""
    rng = np.random.default_rng(10)
    X, y, _ = draw(rng, 3, 2, np.zeros(6), np.eye(6), 0.0)
    for rank in (None, 2):
        prior = rfx.fit_prior(rfx.task_stats(X, y), rank=rank)
        assert np.isfinite(prior.G).all() and 0 < prior.sigma2 < 1e-6
        assert np.isfinite(rfx.posterior_mean(prior, X, y)).all()


def test_bad_arguments_are_refused():
    stats = rfx.task_stats(np.ones((2, 3, 2)), np.ones((2, 3)))
    with pytest.raises(ValueError, match="rank"):
        rfx.fit_prior(stats, rank=3)
    with pytest.raises(ValueError, match="method"):
        rfx.fit_prior(stats, method="reml")


# --- the method ---------------------------------------------------------------------------------

def synthetic(tasks, method="random-effects", **test):
    return {"problem": {"d": 6, "k": 2, "noise_std": 0.5, "task_mean": 1.0, "task_cov": [1.0, 0.5]},
            "method": {"name": method}, "train": {"tasks": tasks, "m_in": 5, "m_out": 5},
            "test": {"tasks": 2000, "m_test": 4, **test}}


def test_its_test_risk_approaches_the_oracle_as_tasks_grow():
    oracle = run_in_memory(validate(synthetic(50, "oracle")))[2]["test"]["excess_risk"]
    gaps = [run_in_memory(validate(synthetic(n)))[2]["test"]["excess_risk"] - oracle for n in (30, 1000)]
    assert gaps[1] < 0.1 * oracle and gaps[1] < gaps[0] / 3, (oracle, gaps)


def test_bayes_is_the_empirical_bayes_head_for_a_learned_representation():
    """none (B = I) with "bayes" is random-effects (same prior: the full fit on raw x); the
    oracle keeps the true prior."""
    a = run_in_memory(validate(synthetic(300)))[2]["test"]
    b = run_in_memory(validate(synthetic(300, "none", adapt="bayes")))[2]["test"]
    assert a["excess_risk"] == pytest.approx(b["excess_risk"], rel=1e-6) and b["adapt"] == "bayes"
    lstsq = run_in_memory(validate(synthetic(300, "none")))[2]["test"]
    assert b["excess_risk"] < lstsq["excess_risk"]


def test_memory_estimate_counts_the_statistics():
    """The estimate bounds the tracemalloc peak within a factor 2 (measured: 1.8 times it; it
    counts five (N, d, d) arrays of an E-step, and the full fit by L-BFGS holds the statistics,
    their roots R (N, min(d, m), d) and blocks of tasks)."""
    config = validate({**synthetic(600), "problem": {"d": 16, "k": 2}, "test": {"tasks": 100, "m_test": 4}})
    estimate = sum(resources.estimate_bytes(config).values())
    tracemalloc.start()
    run_in_memory(config)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < estimate < 2 * peak, (estimate, peak)


def test_runs_through_the_cli_on_synthetic_data_and_a_table(tmp_path):
    synthetic_toml = tmp_path / "s.toml"
    synthetic_toml.write_text('[problem]\nd = 5\nk = 2\n[method]\nname = "random-effects"\nrank = 2\n'
                              '[train]\ntasks = 200\nm_in = 5\nm_out = 5\n[test]\ntasks = 100\nm_test = 3\n')
    assert main(["run", str(synthetic_toml), "--out", str(tmp_path / "s"), "--quiet"]) == 0
    test = json.loads((tmp_path / "s" / "summary.json").read_text())["test"]
    assert test["adapt"] == "bayes" and test["excess_risk"] > 0
    rng = np.random.default_rng(9)
    X, y, group, _ = grouped_table(rng, groups=30)
    pd.DataFrame({"school": group, "x": X[:, 1], "y": y}).to_csv(tmp_path / "t.csv", index=False)
    table_toml = tmp_path / "t.toml"
    table_toml.write_text(f'[data]\npath = "{tmp_path / "t.csv"}"\ntask = "school"\ntarget = "y"\n'
                          '[method]\nname = "random-effects"\n[train]\nm_in = 2\nm_out = 2\n[test]\nm_test = 2\n')
    assert main(["run", str(table_toml), "--out", str(tmp_path / "t"), "--quiet"]) == 0
    test = json.loads((tmp_path / "t" / "summary.json").read_text())["test"]
    assert test["adapt"] == "bayes" and 0 < test["mse"] < 1


def test_a_rank_above_d_is_one_line_exit_2(tmp_path, capsys):
    path = tmp_path / "c.toml"
    path.write_text('[problem]\nd = 5\nk = 2\n[method]\nname = "random-effects"\nrank = 6\n')
    assert main(["run", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "method.rank" in err[0]


def test_bayes_without_finite_training_rows_is_refused_at_validation():
    from metarep.config.schema import ConfigError

    with pytest.raises(ConfigError, match="finite train.m_in"):
        validate({"problem": {"d": 6, "k": 2}, "method": {"name": "fo-anil"},
                  "train": {"tasks": "inf", "m_in": "inf", "m_out": 5}, "test": {"adapt": "bayes"}})
    validate({"problem": {"d": 6, "k": 2}, "method": {"name": "fo-anil"},  # tuned: "bayes" leaves the grid
              "train": {"tasks": "inf", "m_in": "inf", "m_out": 5}, "test": {"adapt": "tuned"}})
