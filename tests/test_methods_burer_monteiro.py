"""Burer-Monteiro multi-task learning: gradient, subspace recovery, full rank with noise, solvers."""

import numpy as np
import pytest
from scipy.linalg import subspace_angles

from metarep.families.problem import make_problem, sample_tasks
from metarep.linear.params import Params, init_params, sgd_update
from metarep.methods import burer_monteiro as bm
from metarep.methods import get_method, outer_step, shared_head


def _setup(d=6, k=2, width=4, *, N=30, m_in=6, m_out=4, noise=1.0, seed=0, head_scale=0.5):
    rng = np.random.default_rng(seed)
    problem = make_problem(d, k, task_mean=0.3, task_cov=[1.0, 2.0][:k] if k <= 2 else 1.0,
                           noise_std=noise, rng=rng)
    tasks = sample_tasks(problem, N, m_in, m_out, rng)
    params = bm.bm_init(init_params(d, width, init_scale=1.0, init_head_scale=head_scale, rng=rng), tasks)
    return problem, tasks, params


def test_gradient_matches_autodiff():
    torch = pytest.importorskip("torch")
    _, tasks, params = _setup(N=7, width=5)
    rng = np.random.default_rng(1)
    params = Params(params.B, rng.standard_normal(params.w.shape))   # distinct heads
    lam = 0.3
    X, y = (torch.from_numpy(a) for a in tasks.pooled())

    def objective(B, W):   # F of the module docstring, task by task
        total = 0.0
        for i in range(X.shape[0]):
            r = X[i] @ (B @ W[i]) - y[i]
            total = total + 0.5 * (r * r).mean() + 0.5 * lam * (W[i] * W[i]).sum()
        return total / X.shape[0] + 0.5 * lam * (B * B).sum()

    B, W = torch.from_numpy(params.B), torch.from_numpy(params.w)
    gB, gW = torch.func.grad(objective, argnums=(0, 1))(B, W)
    grads, value = bm.bm_gradient(params, tasks, lam=lam)
    N = tasks.n_tasks
    assert np.linalg.norm(grads.B - gB.numpy()) < 1e-12 * np.linalg.norm(gB.numpy())
    # Heads: the gradient in the task-averaged inner product, N dF/dw_i.
    assert np.linalg.norm(grads.w - N * gW.numpy()) < 1e-12 * np.linalg.norm(N * gW.numpy())
    assert value == pytest.approx(float(objective(B, W)), rel=1e-13)
    assert bm.bm_objective(params, tasks, lam=lam) == pytest.approx(value, rel=1e-14)


def _gd_step(params, tasks, *, beta, **hyper):
    """bm_step's point and gradient, then theta - beta grad (the engine's default optimizer)."""
    at, grads, value = bm.bm_step(params, tasks, **hyper)
    return sgd_update(at, grads, beta), value


@pytest.mark.parametrize("solver,beta", [("gd", 0.2), ("alternating", 0.5)])
def test_recovers_the_subspace_without_noise(solver, beta):
    problem, tasks, params = _setup(d=8, k=2, width=2, N=100, noise=0.0, head_scale=0.0)
    sin0 = np.sin(subspace_angles(params.B, problem.B_star).max())
    for _ in range(400):
        params, _ = _gd_step(params, tasks, beta=beta, lam=0.0, solver=solver)
    assert sin0 > 0.5
    assert np.sin(subspace_angles(params.B, problem.B_star).max()) < 1e-3
    assert bm.bm_objective(params, tasks) < 1e-8


def test_full_width_with_noise_keeps_a_full_rank_representation():
    """With k' = d the heads fit the noise in every direction, so B stays full rank (the
    point of comparison with FO-ANIL, which unlearns the complement of B*)."""
    problem, tasks, params = _setup(d=6, k=2, width=6, N=50, noise=1.0)
    for _ in range(500):
        params, _ = _gd_step(params, tasks, beta=0.2, lam=1e-3, solver="gd")
    sv = np.linalg.svd(params.B, compute_uv=False)
    assert sv[-1] > 0.2 * sv[0]
    # Most of B's energy lies outside B*'s span: it has not found the low-rank structure.
    perp = params.B - problem.B_star @ (problem.B_star.T @ params.B)
    assert np.linalg.norm(perp) ** 2 > 0.3 * np.linalg.norm(params.B) ** 2


@pytest.mark.parametrize("lam", [0.0, 0.05])
def test_alternating_solver_decreases_the_objective_monotonically(lam):
    _, tasks, params = _setup(d=6, k=2, width=3, N=40, noise=0.5)
    values = [bm.bm_objective(params, tasks, lam=lam)]
    for _ in range(60):
        params, _ = _gd_step(params, tasks, beta=0.3, lam=lam, solver="alternating")
        values.append(bm.bm_objective(params, tasks, lam=lam))
    values = np.array(values)
    assert np.all(np.diff(values) <= 1e-12 * values[:-1])
    assert values[-1] < 0.9 * values[1]


def test_head_solve_is_the_minimiser():
    """The ridge heads zero the head gradient; with lam = 0 and m < k' they are the minimum-norm
    least-squares heads (zero loss, orthogonal to the null space of X_i B)."""
    _, tasks, params = _setup(d=12, width=10, m_in=5, m_out=3)
    for lam in (0.1, 0.0):
        W = bm.training_task_heads(params.B, tasks, lam=lam)
        grads, value = bm.bm_gradient(Params(params.B, W), tasks, lam=lam)
        assert np.abs(grads.w).max() < 1e-10
    X, _ = tasks.pooled()
    F = X @ params.B
    for i in range(tasks.n_tasks):   # W[i] lies in the row space of F_i
        _, s, vt = np.linalg.svd(F[i])
        null = vt[len(s):]
        assert np.abs(null @ W[i]).max() < 1e-10
    assert value < 1e-20


def test_registry_entry_and_state():
    method = get_method("burer-monteiro")
    _, tasks, params = _setup()
    assert params.w.shape == (tasks.n_tasks, params.B.shape[1])
    assert shared_head(params).shape == (params.B.shape[1],)
    new, loss = outer_step(method, params, tasks, beta=0.1, lam=0.0, solver="gd")
    assert new.w.shape == params.w.shape and np.isfinite(loss)
    with pytest.raises(ValueError):
        bm.bm_step(params, tasks, lam=0.0, solver="newton")
    with pytest.raises(ValueError):
        bm.bm_gradient(Params(params.B, params.w[0]), tasks)
