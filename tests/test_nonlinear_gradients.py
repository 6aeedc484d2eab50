"""The network's outer gradients (batched over tasks, summed block by block) against a per-task loop written
with torch.autograd, and its initialisation against the linear model's."""

import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import metarep.nonlinear.meta as nonlinear_meta  # noqa: E402
from metarep.compute import kernels, threads  # noqa: E402
from metarep.families.problem import make_problem, sample_tasks  # noqa: E402
from metarep.linear.params import init_params  # noqa: E402
from metarep.nonlinear import fused  # noqa: E402
from metarep.nonlinear.backend import Net, torch_tasks  # noqa: E402
from metarep.nonlinear.meta import meta_gradient  # noqa: E402
from metarep.nonlinear.model import MLPParams, MLPSpec, init_mlp_params  # noqa: E402

# (adapt_body, exact) of FO-ANIL, ANIL, FO-MAML, MAML
VARIANTS = {"fo-anil": (False, False), "anil": (False, True), "fo-maml": (True, False), "maml": (True, True)}


def _forward(p, X, activation):
    """An independent forward pass: one task, plain torch."""
    act = torch.relu if activation == "relu" else (lambda z: z)
    h = act(X @ p["W1"].T + p.get("b1", 0.0))
    if "W2" in p:
        h = act(h @ p["W2"].T + p.get("b2", 0.0))
    return h @ p["w"]


def _loss(p, X, y, activation):
    return 0.5 * ((_forward(p, X, activation) - y) ** 2).mean()


def _adapt(theta, X, y, *, activation, alpha, steps, adapt_body, exact):
    names = list(theta) if adapt_body else ["w"]
    for _ in range(steps):
        g = torch.autograd.grad(_loss(theta, X, y, activation), [theta[k] for k in names], create_graph=exact)
        theta = {**theta, **{k: theta[k] - alpha * gk for k, gk in zip(names, g)}}
    return theta


def reference_gradient(params: MLPParams, tasks, *, activation, alpha, steps, adapt_body, exact):
    """(1/N) sum_i of each task's outer gradient, one task at a time with torch.autograd."""
    leaves = {k: torch.tensor(v, requires_grad=True) for k, v in {**params.body(), "w": params.w}.items()}
    total = {k: torch.zeros_like(v) for k, v in leaves.items()}
    N = tasks.n_tasks
    for i in range(N):
        X, y = torch.tensor(tasks.X_in[i]), torch.tensor(tasks.y_in[i])
        Xo, yo = torch.tensor(tasks.X_out[i]), torch.tensor(tasks.y_out[i])
        theta = _adapt(dict(leaves), X, y, activation=activation, alpha=alpha, steps=steps, adapt_body=adapt_body,
                       exact=exact)
        if exact:
            g = torch.autograd.grad(_loss(theta, Xo, yo, activation), list(leaves.values()))
        else:
            at = {k: v.detach().requires_grad_() for k, v in theta.items()}
            g = torch.autograd.grad(_loss(at, Xo, yo, activation), list(at.values()))
        for k, gk in zip(leaves, g):
            total[k] += gk / N
    return {k: v.numpy() for k, v in total.items()}


def _setup(layers, bias, seed=0, N=5, d=6, width=4):
    problem = make_problem(d, 2, task_cov=1.0, noise_std=0.5, rng=np.random.default_rng(seed), teacher="relu")
    tasks = sample_tasks(problem, N, 4, 3, np.random.default_rng(seed + 1))
    spec = MLPSpec(d=d, width=width, layers=layers, hidden=5, bias=bias)
    params = init_mlp_params(spec, init_scale=1.0, init_head_scale=1.0, rng=np.random.default_rng(seed + 2))
    if bias:  # nonzero biases, so that their gradients are exercised
        rng = np.random.default_rng(seed + 3)
        params = params._replace(b1=0.3 * rng.standard_normal(params.b1.shape),
                                 b2=0.3 * rng.standard_normal(params.b2.shape))
    return tasks, params


@pytest.mark.parametrize("method", list(VARIANTS))
@pytest.mark.parametrize("layers,bias", [(2, False), (3, True)])
@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize("block_rows", [None, 14])
def test_outer_gradient_matches_per_task_autograd(method, layers, bias, steps, block_rows, monkeypatch):
    """With block_rows = 14 the 5 tasks (7 samples each) are summed in three blocks of tasks."""
    if block_rows is not None:
        monkeypatch.setattr(nonlinear_meta, "BLOCK_ROWS", block_rows)
        assert len(nonlinear_meta.task_blocks(torch_tasks(_setup(layers, bias)[0], Net()))) == 3
    adapt_body, exact = VARIANTS[method]
    tasks, params = _setup(layers, bias)
    grads, loss = meta_gradient(params, tasks, net=Net("relu"), alpha=0.3, inner_steps=steps,
                                adapt_body=adapt_body, exact=exact)
    ref = reference_gradient(params, tasks, activation="relu", alpha=0.3, steps=steps, adapt_body=adapt_body,
                             exact=exact)
    got = {**grads.body(), "w": grads.w}
    assert set(got) == set(ref)
    for k in ref:
        assert np.abs(ref[k]).max() > 1e-3
        np.testing.assert_allclose(got[k], ref[k], rtol=0, atol=1e-10 * max(1.0, np.abs(ref[k]).max()))
    assert np.isfinite(loss) and loss > 0


def test_first_and_second_order_differ():
    """The check above can fail: FO-ANIL's gradient is not ANIL's."""
    tasks, params = _setup(2, False)
    fo, _ = meta_gradient(params, tasks, net=Net("relu"), alpha=0.3, adapt_body=False, exact=False)
    ex = reference_gradient(params, tasks, activation="relu", alpha=0.3, steps=1, adapt_body=False, exact=True)
    assert np.abs(fo.W1 - ex["W1"]).max() > 1e-4


def test_float32_close_to_float64():
    tasks, params = _setup(3, True)
    g64, _ = meta_gradient(params, tasks, net=Net("relu"), alpha=0.3, adapt_body=True, exact=True)
    g32, _ = meta_gradient(params._replace(**{k: v.astype(np.float32) for k, v in params._asdict().items()}),
                           tasks, net=Net("relu", dtype="float32"), alpha=0.3, adapt_body=True, exact=True)
    assert g32.W1.dtype == np.float32
    for a, b in zip(g64, g32):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-4 * max(1.0, np.abs(a).max(initial=0.0)))


def test_two_layer_init_is_the_linear_init():
    spec = MLPSpec(d=7, width=5, layers=2)
    mlp = init_mlp_params(spec, init_scale=0.8, init_head_scale=0.5, rng=np.random.default_rng(3))
    lin = init_params(7, 5, init_scale=0.8, init_head_scale=0.5, rng=np.random.default_rng(3))
    np.testing.assert_array_equal(mlp.W1, lin.B.T)
    np.testing.assert_array_equal(mlp.w, lin.w)
    assert mlp.W2.size == mlp.b1.size == mlp.b2.size == 0


def test_three_layer_init_shapes_and_scales():
    spec = MLPSpec(d=40, width=30, layers=3, hidden=60, bias=True)
    p = init_mlp_params(spec, init_scale=2.0, init_head_scale=1.0, rng=np.random.default_rng(0))
    assert p.W1.shape == (60, 40) and p.W2.shape == (30, 60) and p.b1.shape == (60,) and p.b2.shape == (30,)
    assert abs(p.W1.var() * 40 / 4 - 1) < 0.1 and abs(p.W2.var() * 60 / 4 - 1) < 0.1
    assert not p.b1.any() and not p.b2.any()
    assert type(p)(**{k: np.asarray(v) for k, v in p._asdict().items()}) is not None


@pytest.mark.parametrize("exact", [False, True])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("activation", ["relu", "identity"])
def test_compiled_head_pass_matches_per_task_autograd(exact, bias, activation):
    """FO-ANIL and ANIL with one inner step, two layers, float64 on the CPU: the compiled pass
    (nonlinear/fused.py) against the per-task loop, and against the torch path."""
    pytest.importorskip("numba")
    tasks, params = _setup(2, bias, N=150)                         # 150 tasks: five blocks of 32
    assert fused.applies(params, device="cpu", dtype="float64", inner_steps=1, adapt_body=False)
    grads, loss = fused.head_pass(params, tasks, activation=activation, alpha=0.3, exact=exact)
    ref = reference_gradient(params, tasks, activation=activation, alpha=0.3, steps=1, adapt_body=False,
                             exact=exact)
    got = {**grads.body(), "w": grads.w}
    assert set(got) == set(ref)
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], rtol=0, atol=1e-10 * max(1.0, np.abs(ref[k]).max()))
    with kernels.use("numpy"):                                     # the torch path
        via_torch, torch_loss = meta_gradient(params, tasks, net=Net(activation), alpha=0.3, adapt_body=False,
                                              exact=exact)
    assert abs(loss - torch_loss) < 1e-12 * max(1.0, abs(torch_loss))
    assert all(np.allclose(a, b, rtol=0, atol=1e-12 * max(1.0, np.abs(b).max(initial=0.0)))
               for a, b in zip(grads, via_torch))


def test_compiled_head_pass_is_taken_only_where_it_applies(monkeypatch):
    pytest.importorskip("numba")
    tasks, params = _setup(2, False)
    three = _setup(3, True)[1]
    ok = {"device": "cpu", "dtype": "float64", "inner_steps": 1, "adapt_body": False}
    assert fused.applies(params, **ok)
    assert fused.applies(three, **{**ok, "dtype": "float32", "inner_steps": 2})  # tests/test_nonlinear_fused3.py
    for change in ({"device": "cuda"}, {"adapt_body": True}):
        assert not fused.applies(params, **{**ok, **change})
    with kernels.use("numpy"):
        assert not fused.applies(params, **ok)
    calls = []
    monkeypatch.setattr(fused, "head_pass", lambda *a, **k: calls.append(k) or (params, 0.0))
    meta_gradient(params, tasks, net=Net("relu"), alpha=0.3, adapt_body=False, exact=True)
    assert not calls                              # the torch path; the methods' declarations choose


def test_compiled_head_pass_does_not_depend_on_the_thread_count(monkeypatch):
    pytest.importorskip("numba")
    tasks, params = _setup(2, True, N=64 * 40, d=50, width=50)     # over 1 MB: several threads
    monkeypatch.setattr(threads, "available", lambda: 3)
    out = []
    for free, n in ((3, 1), (3, 2), (3, 3), (2, 2)):                # numba's pool, then helper threads
        monkeypatch.setattr(threads, "free_cpus", lambda f=free: f)
        with threads.limited(n):
            out.append(fused.head_pass(params, tasks, activation="relu", alpha=0.1, exact=True))
    for grads, loss in out[1:]:
        assert loss == out[0][1]
        assert all(np.array_equal(a, b) for a, b in zip(grads, out[0][0]))


def test_compiled_head_pass_runs_blas_on_one_thread_inside_its_threads():
    """The kernel's matrix products run inside numba's OpenMP loop: SciPy's OpenBLAS must be held
    to one thread there (else it warns, on every product, that the application may hang), also
    when the BLAS limit was first set up before SciPy's BLAS was loaded (a fresh process)."""
    pytest.importorskip("numba")
    script = """
import numpy as np
import torch  # as in a network run; OpenBLAS notices the OpenMP loop only with it loaded
from metarep.compute import kernels, threads
from metarep.nonlinear import fused
from metarep.nonlinear.model import MLPSpec, init_mlp_params
from metarep.families.problem import make_problem, sample_tasks
with kernels.step_threads():
    pass
threads.available = lambda: 2
threads.free_cpus = lambda: 2
problem = make_problem(50, 2, task_cov=1.0, rng=np.random.default_rng(0), teacher="relu")
tasks = sample_tasks(problem, 64 * 8, 20, 10, np.random.default_rng(1))
params = init_mlp_params(MLPSpec(d=50, width=50), init_scale=1.0, init_head_scale=1.0, rng=np.random.default_rng(2))
for _ in range(2):
    fused.head_pass(params, tasks, activation="relu", alpha=0.1, exact=True)
"""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "OpenBLAS" not in done.stderr
