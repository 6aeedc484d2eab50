"""The compiled head-only pass (nonlinear/fused.py) for two and three layers, any number of inner
steps, float64 and float32: against the per-task torch.autograd loop of test_nonlinear_gradients,
its thread-count independence, and the methods' dispatch to it."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("numba")

from metarep.compute import kernels, threads  # noqa: E402
from metarep.families.problem import make_problem, sample_tasks  # noqa: E402
from metarep.methods.mlp.anil import METHOD as ANIL  # noqa: E402
from metarep.methods.mlp.fo_anil import METHOD as FO_ANIL  # noqa: E402
from metarep.nonlinear import fused  # noqa: E402
from metarep.nonlinear.backend import Net  # noqa: E402
from metarep.nonlinear.meta import meta_gradient  # noqa: E402
from metarep.nonlinear.model import MLPSpec, init_mlp_params  # noqa: E402
from test_nonlinear_gradients import reference_gradient  # noqa: E402

# float32's bound, relative to the largest entry of each gradient (up to 1e-6 measured here, with float64 at 2e-15)
FLOAT32_RTOL = 1e-5


def _setup(layers, bias, *, N=40, d=6, width=4, hidden=5, seed=0):
    """N = 40 tasks: a block of 32 and one of 8."""
    problem = make_problem(d, 2, task_cov=1.0, noise_std=0.5, rng=np.random.default_rng(seed), teacher="relu")
    tasks = sample_tasks(problem, N, 4, 3, np.random.default_rng(seed + 1))
    spec = MLPSpec(d=d, width=width, layers=layers, hidden=hidden, bias=bias)
    params = init_mlp_params(spec, init_scale=1.0, init_head_scale=1.0, rng=np.random.default_rng(seed + 2))
    if bias:  # nonzero biases, so that their gradients are exercised
        rng = np.random.default_rng(seed + 3)
        params = params._replace(b1=0.3 * rng.standard_normal(params.b1.shape),
                                 b2=0.3 * rng.standard_normal(params.b2.shape))
    return tasks, params


def _relative_error(got, ref) -> float:
    return max(float(np.abs(got[k] - ref[k]).max() / np.abs(ref[k]).max()) for k in ref)


@pytest.mark.parametrize("activation", ["relu", "identity"])
@pytest.mark.parametrize("exact", [False, True])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("steps", [1, 2, 3])
@pytest.mark.parametrize("layers", [2, 3])
def test_compiled_pass_matches_per_task_autograd(layers, steps, bias, exact, activation):
    tasks, params = _setup(layers, bias)
    ref = reference_gradient(params, tasks, activation=activation, alpha=0.3, steps=steps, adapt_body=False,
                             exact=exact)
    assert all(np.abs(v).max() > 1e-3 for v in ref.values())
    grads, loss = fused.head_pass(params, tasks, activation=activation, alpha=0.3, exact=exact, inner_steps=steps)
    got = {**grads.body(), "w": grads.w}
    assert set(got) == set(ref)
    assert _relative_error(got, ref) < 1e-12
    with kernels.use("numpy"):                                     # the torch path: the same loss
        _, torch_loss = meta_gradient(params, tasks, net=Net(activation), alpha=0.3, inner_steps=steps,
                                      adapt_body=False, exact=exact)
    assert abs(loss - torch_loss) < 1e-12 * abs(torch_loss)
    p32 = params._replace(**{k: v.astype(np.float32) for k, v in params._asdict().items()})
    g32, loss32 = fused.head_pass(p32, tasks, activation=activation, alpha=0.3, exact=exact, inner_steps=steps,
                                  dtype="float32")
    assert g32.W1.dtype == np.float32
    assert _relative_error({**g32.body(), "w": g32.w}, ref) < FLOAT32_RTOL
    assert abs(loss32 - loss) < FLOAT32_RTOL * loss


def test_inner_steps_and_orders_change_the_gradient():
    """The checks above can fail: the gradient depends on the number of steps and the order."""
    tasks, params = _setup(3, True)
    g = {(s, e): fused.head_pass(params, tasks, activation="relu", alpha=0.3, exact=e, inner_steps=s)[0]
         for s in (1, 2) for e in (False, True)}
    for a, b in (((1, False), (2, False)), ((2, False), (2, True)), ((1, True), (2, True))):
        assert np.abs(g[a].W2 - g[b].W2).max() > 1e-4 and np.abs(g[a].W1 - g[b].W1).max() > 1e-4


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_three_layers_do_not_depend_on_the_thread_count(dtype, monkeypatch):
    tasks, params = _setup(3, True, N=64 * 20, d=50, width=30, hidden=40)   # over 1 MB: several threads
    monkeypatch.setattr(threads, "available", lambda: 3)
    out = []
    for free, n in ((3, 1), (3, 2), (3, 3), (2, 2)):                # numba's pool, then helper threads
        monkeypatch.setattr(threads, "free_cpus", lambda f=free: f)
        with threads.limited(n):
            out.append(fused.head_pass(params, tasks, activation="relu", alpha=0.1, exact=True, inner_steps=2,
                                       dtype=dtype))
    for grads, loss in out[1:]:
        assert loss == out[0][1]
        assert all(np.array_equal(a, b) for a, b in zip(grads, out[0][0]))


def test_methods_take_the_compiled_pass_where_it_applies(monkeypatch):
    tasks, params = _setup(3, False)
    ok = {"device": "cpu", "dtype": "float64", "inner_steps": 3, "adapt_body": False}
    assert fused.applies(params, **ok) and fused.applies(params, **{**ok, "dtype": "float32"})
    for change in ({"device": "cuda"}, {"adapt_body": True}, {"inner_steps": 0}, {"inner_steps": 1.5}):
        assert not fused.applies(params, **{**ok, **change})
    with kernels.use("numpy"):
        assert not fused.applies(params, **ok)
    calls = []
    monkeypatch.setattr(fused, "head_pass", lambda *a, **k: calls.append(k) or (params, 0.0))
    for method, exact in ((FO_ANIL, False), (ANIL, True)):
        method.gradient(params, tasks, net=Net("relu", dtype="float32"), alpha=0.3, inner_steps=2)
        assert calls.pop() == {"activation": "relu", "alpha": 0.3, "exact": exact, "inner_steps": 2,
                               "dtype": "float32"}
        with kernels.use("numpy"):                                 # the torch path: the same gradient
            torch_grads, _ = method.gradient(params, tasks, net=Net("relu"), alpha=0.3, inner_steps=2)
        assert not calls
        monkeypatch.undo()
        grads, _ = method.gradient(params, tasks, net=Net("relu"), alpha=0.3, inner_steps=2)
        assert all(np.allclose(a, b, rtol=0, atol=1e-12 * np.abs(b).max(initial=1.0))
                   for a, b in zip(grads, torch_grads))
        monkeypatch.setattr(fused, "head_pass", lambda *a, **k: calls.append(k) or (params, 0.0))


def test_torch_tensors_give_the_arrays_gradient():
    """Parameters and tasks as CPU tensors (their NumPy views) give the arrays' gradient; the
    methods return tensors for tensors."""
    tasks, params = _setup(3, True)
    from metarep.nonlinear.backend import torch_tasks

    as_tensors = params._replace(**{k: torch.tensor(v, requires_grad=True) for k, v in params._asdict().items()})
    got, loss = fused.head_pass(as_tensors, torch_tasks(tasks, Net()), activation="relu", alpha=0.3, exact=True,
                                inner_steps=2)
    want, want_loss = fused.head_pass(params, tasks, activation="relu", alpha=0.3, exact=True, inner_steps=2)
    assert loss == want_loss and all(np.array_equal(a, b) for a, b in zip(got, want))
    got, _ = ANIL.gradient(as_tensors, tasks, net=Net("relu"), alpha=0.3, inner_steps=2)   # tensors out
    assert all(isinstance(a, torch.Tensor) and np.array_equal(a.numpy(), b) for a, b in zip(got, want))


def test_three_layer_benchmark_checks_its_contenders():
    """`metarep bench --arch mlp --layers 3` on a tiny setting: the loops' three gradients (W1,
    W2, w) agree with metarep's before they are timed."""
    from metarep.bench import mlp

    result = mlp.run_mlp_bench(n_tasks=6, m_in=3, m_out=2, d=4, width=4, layers=3, repeats=1, loop_tasks=3,
                               loop_repeats=1, gemm_n=128)
    assert result["setting"]["layers"] == 3
    for row in result["rows"]:
        assert row["torch_loop_err"] < 1e-8 and row["torch_loop_s"] > 0
        assert row.get("higher_loop_err", 0.0) < 1e-8
    assert "three-layer" in mlp.format_mlp_report(result)
    tasks, params = mlp._setup(5, 3, 2, 4, 4, 0, layers=3)
    assert len(mlp._as_numpy(mlp.torch_loop(params, tasks, alpha=0.3, exact=True)())) == 3
    assert mlp.step_flops(True, 5, 3, 2, 4, 4, hidden=6) > mlp.step_flops(True, 5, 3, 2, 4, 4)


def test_layers_is_refused_outside_the_network_benchmark():
    from click.testing import CliRunner

    from metarep.bench.cli import bench

    done = CliRunner().invoke(bench, ["--layers", "3", "--quick"])
    assert done.exit_code == 2 and "--arch mlp" in done.output
