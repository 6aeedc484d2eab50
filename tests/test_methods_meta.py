"""The vectorised meta-gradients (FO-ANIL, ANIL, FO-MAML, MAML) against automatic
differentiation of the same meta-objective written as a plain per-task loop (MATH 3)."""

import numpy as np
import pytest

from metarep.families.problem import make_problem, sample_tasks
from metarep.linear.params import Params
from metarep.methods import anil, fo_anil, fo_maml, maml

torch = pytest.importorskip("torch")

GRADIENTS = {"fo-anil": fo_anil.fo_anil_gradient, "anil": anil.anil_gradient,
             "fo-maml": fo_maml.fo_maml_gradient, "maml": maml.maml_gradient}


def _setup(d, width, *, N=6, m_in=4, m_out=3, seed=0):
    rng = np.random.default_rng(seed)
    problem = make_problem(d, 2, task_mean=0.5, task_cov=[1.0, 2.0], noise_std=0.7, rng=rng)
    tasks = sample_tasks(problem, N, m_in, m_out, rng)
    params = Params(rng.standard_normal((d, width)) / np.sqrt(d), rng.standard_normal(width) / np.sqrt(width))
    return params, tasks


def _torch_meta_loss(name, B, w, tasks, alpha, steps):
    """(1/N) sum_i L(adapted params of task i; outer set), one task at a time."""
    adapt_B = name in ("fo-maml", "maml")
    first_order = name.startswith("fo-")
    total = 0.0
    for i in range(tasks.n_tasks):
        X, y = torch.from_numpy(tasks.X_in[i]), torch.from_numpy(tasks.y_in[i])
        Xo, yo = torch.from_numpy(tasks.X_out[i]), torch.from_numpy(tasks.y_out[i])

        def inner_loss(Bi, wi, X=X, y=y):
            r = X @ (Bi @ wi) - y
            return 0.5 * (r * r).mean()

        Bi, wi = B, w
        for _ in range(steps):
            gB, gw = torch.func.grad(inner_loss, argnums=(0, 1))(Bi, wi)
            Bi, wi = (Bi - alpha * gB if adapt_B else Bi), wi - alpha * gw
        if first_order:
            # The adapted parameters are the shared ones plus a constant shift.
            wi = w + (wi - w).detach()
            Bi = B + (Bi - B).detach()
        r = Xo @ (Bi @ wi) - yo
        total = total + 0.5 * (r * r).mean()
    return total / tasks.n_tasks


def _autodiff(name, params, tasks, alpha, steps):
    B, w = torch.from_numpy(params.B), torch.from_numpy(params.w)
    gB, gw = torch.func.grad(lambda B, w: _torch_meta_loss(name, B, w, tasks, alpha, steps), argnums=(0, 1))(B, w)
    loss = _torch_meta_loss(name, B, w, tasks, alpha, steps)
    return gB.numpy(), gw.numpy(), float(loss)


def _rel(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


@pytest.mark.parametrize("name", list(GRADIENTS))
@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("width", [3, 5, 9])
def test_gradient_matches_autodiff(name, steps, width):
    params, tasks = _setup(7, width)
    alpha = 0.3
    grads, loss = GRADIENTS[name](params, tasks, alpha=alpha, inner_steps=steps)
    gB, gw, ref_loss = _autodiff(name, params, tasks, alpha, steps)
    assert grads.B.shape == params.B.shape and grads.w.shape == params.w.shape
    assert _rel(grads.B, gB) < 1e-10
    assert _rel(grads.w, gw) < 1e-10
    assert abs(loss - ref_loss) <= 1e-12 * abs(ref_loss)


@pytest.mark.parametrize("steps", [1, 3])
def test_exact_and_first_order_variants_differ(steps):
    """Guards the autodiff check's power: the four objectives really give four gradients."""
    params, tasks = _setup(7, 5)
    g = {name: f(params, tasks, alpha=0.3, inner_steps=steps)[0] for name, f in GRADIENTS.items()}
    names = list(g)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert _rel(g[a].B, g[b].B) > 1e-3, (a, b)


@pytest.mark.parametrize("exact,first", [("anil", "fo-anil"), ("maml", "fo-maml")])
@pytest.mark.parametrize("steps", [1, 3])
def test_first_order_error_is_order_alpha(exact, first, steps):
    """The first-order approximation drops terms that carry a factor alpha: halving alpha
    halves the difference to the exact gradient (ratio -> 2 as alpha -> 0)."""
    params, tasks = _setup(7, 5, N=20)

    def diff(alpha):
        e = GRADIENTS[exact](params, tasks, alpha=alpha, inner_steps=steps)[0]
        f = GRADIENTS[first](params, tasks, alpha=alpha, inner_steps=steps)[0]
        return np.sqrt(np.sum((e.B - f.B) ** 2) + np.sum((e.w - f.w) ** 2))

    alpha = 1e-4
    assert diff(alpha) > 0
    assert diff(alpha) / diff(alpha / 2) == pytest.approx(2.0, abs=0.02)


def test_one_inner_step_matches_math_closed_forms():
    """MATH 3's one-step ANIL and MAML formulas, written out task by task in NumPy."""
    params, tasks = _setup(7, 5)
    B, w = params
    alpha, N = 0.3, tasks.n_tasks
    gA = [np.zeros_like(B), np.zeros_like(w)]
    gM = [np.zeros_like(B), np.zeros_like(w)]
    for i in range(N):
        X, y, Xo, yo = tasks.X_in[i], tasks.y_in[i], tasks.X_out[i], tasks.y_out[i]
        S = X.T @ X / X.shape[0]
        g = X.T @ (X @ B @ w - y) / X.shape[0]
        # ANIL
        wi = w - alpha * B.T @ g
        gp = Xo.T @ (Xo @ B @ wi - yo) / Xo.shape[0]
        q = B.T @ gp
        gA[1] += (np.eye(len(w)) - alpha * B.T @ S @ B) @ q / N
        gA[0] += (np.outer(gp, wi) - alpha * (np.outer(g, q) + S @ B @ np.outer(q, w))) / N
        # MAML
        Bi = B - alpha * np.outer(g, w)
        gp = Xo.T @ (Xo @ Bi @ wi - yo) / Xo.shape[0]
        GB, Gw = np.outer(gp, wi), Bi.T @ gp
        h = -alpha * (GB @ w + B @ Gw)
        gM[0] += (GB - alpha * np.outer(g, Gw) + S @ np.outer(h, w)) / N
        gM[1] += (Gw - alpha * GB.T @ g + B.T @ S @ h) / N
    a = anil.anil_gradient(params, tasks, alpha=alpha)[0]
    m = maml.maml_gradient(params, tasks, alpha=alpha)[0]
    assert _rel(a.B, gA[0]) < 1e-12 and _rel(a.w, gA[1]) < 1e-12
    assert _rel(m.B, gM[0]) < 1e-12 and _rel(m.w, gM[1]) < 1e-12


def test_inner_steps_must_be_positive():
    params, tasks = _setup(7, 5)
    with pytest.raises(ValueError):
        maml.maml_gradient(params, tasks, alpha=0.1, inner_steps=0)


@pytest.mark.parametrize("steps", [1, 2])
def test_shared_inner_loop_reproduces_fo_anil(steps):
    from metarep.methods.inner import meta_gradient

    params, tasks = _setup(7, 9)
    ref, ref_loss = fo_anil.fo_anil_gradient(params, tasks, alpha=0.2, inner_steps=steps)
    got, loss = meta_gradient(params, tasks, alpha=0.2, inner_steps=steps, adapt_B=False, exact=False)
    assert _rel(got.B, ref.B) < 1e-13 and _rel(got.w, ref.w) < 1e-13 and loss == pytest.approx(ref_loss)
