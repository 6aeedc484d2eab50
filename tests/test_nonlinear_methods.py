"""One model, two codes: the network with two layers, the identity and no bias is the linear
model x^T B w with B = W1^T, so every method on it must retrace the linear method's run."""

import numpy as np
import pytest

pytest.importorskip("torch")

from metarep.families.problem import make_problem, sample_tasks  # noqa: E402
from metarep.linear.params import Params, init_params, sgd_update  # noqa: E402
from metarep.methods import get_method, outer_step  # noqa: E402
from metarep.methods.mlp import anil, fo_anil, fo_maml, maml, multitask  # noqa: E402
from metarep.nonlinear.backend import Net  # noqa: E402
from metarep.nonlinear.model import MLPParams, MLPSpec, init_mlp_params  # noqa: E402

MLP = {"fo-anil": fo_anil.METHOD, "anil": anil.METHOD, "fo-maml": fo_maml.METHOD, "maml": maml.METHOD}
IDENTITY = Net("identity")


def _setup(d=8, k=2, width=7, N=30, seed=0):
    problem = make_problem(d, k, task_cov=[1.0, 0.5], noise_std=0.5, rng=np.random.default_rng(seed))
    tasks = sample_tasks(problem, N, 6, 5, np.random.default_rng(seed + 1))
    lin = init_params(d, width, init_scale=1.0, init_head_scale=0.5, rng=np.random.default_rng(seed + 2))
    mlp = init_mlp_params(MLPSpec(d=d, width=width, activation="identity"), init_scale=1.0, init_head_scale=0.5,
                          rng=np.random.default_rng(seed + 2))
    return problem, tasks, lin, mlp


def _assert_same(mlp: MLPParams, lin: Params, tol=1e-10):
    scale = max(np.abs(lin.B).max(), np.abs(lin.w).max())
    np.testing.assert_allclose(mlp.W1, lin.B.T, rtol=0, atol=tol * scale)
    np.testing.assert_allclose(mlp.w, lin.w, rtol=0, atol=tol * scale)


@pytest.mark.parametrize("name", list(MLP))
def test_identity_network_retraces_the_linear_run(name):
    """200 outer steps from the same initialisation agree to 1e-10."""
    _, tasks, lin, mlp = _setup()
    hyper = dict(alpha=0.2, inner_steps=2 if name == "maml" else 1)
    linear, net_method = get_method(name), MLP[name]
    moved = 0.0
    for _ in range(200):
        g_lin, loss_lin = linear.gradient(lin, tasks, **hyper)
        g_mlp, loss_mlp = net_method.gradient(mlp, tasks, net=IDENTITY, **hyper)
        assert abs(loss_mlp - loss_lin) <= 1e-10 * loss_lin
        new = sgd_update(lin, g_lin, 0.1)
        moved = max(moved, np.abs(new.B - lin.B).max())
        lin, mlp = new, sgd_update(mlp, g_mlp, 0.1)
    _assert_same(mlp, lin)
    assert np.abs(lin.B.T - _setup()[3].W1).max() > 1e-2  # the runs went somewhere


def test_relu_network_does_not_retrace_the_linear_run():
    """The comparison above can fail: with relu the gradients differ."""
    _, tasks, lin, mlp = _setup()
    g_lin, _ = get_method("fo-anil").gradient(lin, tasks, alpha=0.2)
    g_mlp, _ = fo_anil.METHOD.gradient(mlp, tasks, net=Net("relu"), alpha=0.2)
    assert np.abs(g_mlp.W1 - g_lin.B.T).max() > 1e-3


@pytest.mark.parametrize("solver", ["gd", "alternating"])
def test_identity_multitask_retraces_burer_monteiro(solver):
    _, tasks, lin, mlp = _setup(N=12)
    linear = get_method("burer-monteiro")
    lin, mlp = linear.init(lin, tasks), multitask.METHOD.init(mlp, tasks)
    assert mlp.w.shape == (12, 7)
    for _ in range(50):
        lin, value_lin = outer_step(linear, lin, tasks, beta=0.1, lam=0.05, solver=solver)
        mlp, value_mlp = outer_step(multitask.METHOD, mlp, tasks, beta=0.1, net=IDENTITY, lam=0.05, solver=solver)
        assert abs(value_mlp - value_lin) <= 1e-10 * value_lin
    _assert_same(mlp, lin, tol=1e-9 if solver == "alternating" else 1e-10)


def test_multitask_gradient_matches_autograd():
    import torch

    from metarep.nonlinear.backend import torch_params, torch_tasks
    from metarep.nonlinear.multitask import objective

    _, tasks, _, mlp = _setup(N=6)
    mlp = init_mlp_params(MLPSpec(d=8, width=5, layers=3, hidden=6, bias=True), init_scale=1.0,
                          init_head_scale=1.0, rng=np.random.default_rng(4))
    mlp = multitask.METHOD.init(mlp, tasks)
    mlp = mlp._replace(b1=mlp.b1 + 0.1, w=mlp.w + np.random.default_rng(5).standard_normal(mlp.w.shape))
    grads, value = multitask.METHOD.gradient(mlp, tasks, net=Net("relu"), lam=0.1)
    # per task, autograd, no torch.func
    leaves = {k: v.requires_grad_() for k, v in torch_params(mlp, Net("relu")).items()}
    t = torch_tasks(tasks, Net("relu"))
    F = objective(leaves, t, activation="relu", lam=0.1)
    ref = torch.autograd.grad(F, list(leaves.values()))
    assert abs(F.item() - value) < 1e-12
    for (k, _), r in zip(leaves.items(), ref):
        got = getattr(grads, k)
        expect = r.numpy() * (6 if k == "w" else 1)
        np.testing.assert_allclose(got, expect, rtol=0, atol=1e-12)
    # the objective itself against a per-task loop
    loss = 0.0
    for i in range(6):
        X = np.concatenate([tasks.X_in[i], tasks.X_out[i]])
        y = np.concatenate([tasks.y_in[i], tasks.y_out[i]])
        h = np.maximum(X @ mlp.W1.T + mlp.b1, 0)
        h = np.maximum(h @ mlp.W2.T + mlp.b2, 0)
        loss += 0.5 * np.mean((h @ mlp.w[i] - y) ** 2) / 6
    pen = 0.05 * (sum(np.sum(a * a) for a in mlp[:4]) + np.sum(mlp.w**2) / 6)
    assert abs(loss + pen - value) < 1e-12
