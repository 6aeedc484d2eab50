"""`metarep bench --arch mlp [--layers 3]`: one outer step of FO-ANIL and ANIL on the two- or
three-layer relu network (as the engine runs it: the methods' declared gradient, on the CPU the
compiled head pass of metarep.nonlinear.fused) against the way the field's libraries run it: a
per-task `higher` loop and a per-task torch.autograd loop.

Every contender's gradient is checked against metarep's on the same tasks before it is timed. The
loops are timed on the first `loop_tasks` tasks and scaled to N (their cost is linear in N: one
task after another). The floating-point rate counts the matrix products of the step (2 flop per
multiply-add; elementwise work not counted) and is compared with the machine's float64 matrix
product rate (bench.bandwidth.measure_gemm_rate, NumPy's BLAS on all cores; the faster of a
measurement before and one after, since other work on the machine only ever slows it). The
report ends with the targets: at least 100x the `higher` loop and 40% of that rate.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from metarep.bench.bandwidth import measure_gemm_rate
from metarep.compute import threads
from metarep.methods.mlp.anil import METHOD as _EXACT
from metarep.methods.mlp.fo_anil import METHOD as _FIRST_ORDER

#: the outer steps timed, by their registered names: FO-ANIL, exact ANIL
FIRST_ORDER, EXACT = _FIRST_ORDER.name, _EXACT.name


def step_flops(exact: bool, N: int, m_in: int, m_out: int, d: int, n: int, steps: int = 1,
               hidden: int | None = None) -> int:
    """Matrix-product flop of one outer step, head-only inner steps, width n; two layers, or three
    with `hidden` units in the first: the features of every sample (2 N m P, P = d n, or
    d hidden + hidden n, the body's multiply-adds per sample), s inner head steps (F w and F^T r:
    4 s N m_in n), the outer predictions and head gradient (4 N m_out n), the body's gradient
    through the outer samples (2 N m_out P, and the product back through W2, 2 N m_out hidden n)
    and, for exact ANIL, through the inner ones too (2 N m_in P (+ 2 N m_in hidden n), and the
    head steps' reverse pass again, 4 s N m_in n)."""
    P = d * n if hidden is None else d * hidden + hidden * n
    back = P if hidden is None else P + hidden * n
    m = m_in + m_out
    flops = 2 * N * m * P + 4 * steps * N * m_in * n + 4 * N * m_out * n + 2 * N * m_out * back
    if exact:
        flops += 2 * N * m_in * back + 4 * steps * N * m_in * n
    return flops


def _setup(N, m_in, m_out, d, width, seed, layers=2, hidden=None):
    from metarep.families.problem import make_problem, sample_tasks
    from metarep.nonlinear.model import MLPSpec, init_mlp_params

    k = min(5, d)
    problem = make_problem(d, k, task_cov=list(np.arange(1.0, k + 1) / k), noise_std=1.0,
                           rng=np.random.default_rng(seed), teacher="relu")
    tasks = sample_tasks(problem, N, m_in, m_out, np.random.default_rng(seed + 1))
    params = init_mlp_params(MLPSpec(d=d, width=width, layers=layers, hidden=hidden), init_scale=1.0,
                             init_head_scale=1.0, rng=np.random.default_rng(seed + 2))
    return tasks, params


def metarep_step(params, tasks, *, alpha: float, exact: bool, net) -> Callable[[], tuple]:
    """The step as the engine takes it (the method's declared gradient): tasks already on the
    device, on the threads the engine gives a step of this size; on the CPU that is the
    compiled head pass (`nonlinear.fused`)."""
    from metarep.nonlinear.backend import torch_tasks

    T = torch_tasks(tasks, net)
    gradient = (_EXACT if exact else _FIRST_ORDER).gradient
    assert gradient is not None

    def step():
        return gradient(params, T, net=net, alpha=alpha, inner_steps=1)

    return step


def _body(params) -> list:
    """The body's weights (W1, and W2 for three layers; the benchmark has no biases) as tensors."""
    import torch

    return [torch.tensor(a) for a in (params.W1, params.W2) if a.size]


def _phi(X, body):
    """relu features through the layers `body`."""
    for W in body:
        X = (X @ W.T).relu()
    return X


def torch_loop(params, tasks, *, alpha: float, exact: bool) -> Callable[[], tuple]:
    """One task after another with torch.autograd (create_graph for the exact gradient)."""
    import torch

    body = [W.requires_grad_() for W in _body(params)]
    w = torch.tensor(params.w, requires_grad=True)
    data = [torch.as_tensor(a) for a in (tasks.X_in, tasks.y_in, tasks.X_out, tasks.y_out)]

    def loss(w_, X, y):
        return 0.5 * ((_phi(X, body) @ w_ - y) ** 2).mean()

    def step():
        total = [torch.zeros_like(a) for a in (*body, w)]
        N = data[0].shape[0]
        for i in range(N):
            X, y, Xo, yo = (a[i] for a in data)
            (g,) = torch.autograd.grad(loss(w, X, y), w, create_graph=exact)
            wi = w - alpha * g
            if not exact:
                wi = wi.detach().requires_grad_()
            for t, gi in zip(total, torch.autograd.grad(loss(wi, Xo, yo), (*body, w if exact else wi))):
                t += gi / N
        return tuple(total)

    return step


def higher_loop(params, tasks, *, alpha: float, exact: bool) -> Callable[[], tuple]:
    """learn2learn/higher style: an nn.Module, `higher.innerloop_ctx` with SGD on the head, per task."""
    import higher
    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.W1 = torch.nn.Parameter(torch.tensor(params.W1))
            self.W2 = torch.nn.Parameter(torch.tensor(params.W2)) if params.W2.size else None
            self.w = torch.nn.Parameter(torch.tensor(params.w))

        def forward(self, X):
            return _phi(X, [self.W1] if self.W2 is None else [self.W1, self.W2]) @ self.w

    model = Net()
    inner_opt = torch.optim.SGD([model.w], lr=alpha)
    data = [torch.as_tensor(a) for a in (tasks.X_in, tasks.y_in, tasks.X_out, tasks.y_out)]

    def mse(pred, y):
        return 0.5 * torch.mean((pred - y) ** 2)

    def step():
        model.zero_grad()
        N = data[0].shape[0]
        for i in range(N):
            X, y, Xo, yo = (a[i] for a in data)
            with higher.innerloop_ctx(model, inner_opt, copy_initial_weights=False,
                                      track_higher_grads=exact) as (fmodel, diffopt):
                diffopt.step(mse(fmodel(X), y))
                outer = mse(fmodel(Xo), yo) / N
                if exact:
                    outer.backward()
                else:
                    for p, g in zip(model.parameters(), torch.autograd.grad(outer, fmodel.parameters())):
                        p.grad = g if p.grad is None else p.grad + g
        return tuple(p.grad for p in model.parameters())

    return step


def one_thread_pools():
    """torch's (and BLAS's) thread pools on one thread, scoped."""
    from metarep.nonlinear.backend import step_threads

    return step_threads(0.0)


def _median_time(fn: Callable, repeats: int) -> tuple[float, tuple]:
    out = fn()  # warm-up (and the value the check uses)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def _as_numpy(grads) -> tuple[np.ndarray, ...]:
    """The gradients of (W1, [W2], w) as NumPy arrays."""
    if isinstance(grads, tuple) and hasattr(grads[0], "W1"):  # metarep: (MLPParams, loss)
        return tuple(np.asarray(a) for a in (grads[0].W1, grads[0].W2, grads[0].w) if a.size)
    return tuple(g.detach().cpu().numpy() for g in grads)


def _check(name: str, got, ref) -> float:
    """Largest relative difference of a contender's (W1, [W2], w) gradient from metarep's; raises when off."""
    err = max(float(np.abs(g - r).max() / max(np.abs(r).max(), 1e-300)) for g, r in zip(got, ref))
    if not err < 1e-8:
        raise AssertionError(f"{name}: gradient differs from metarep's by {err:.2e} (relative)")
    return err


def bench_method(method: str, tasks, params, *, alpha: float, repeats: int, loop_tasks: int, loop_repeats: int,
                 contenders, log: Callable[[str], None]) -> dict:
    """Time one outer step of `method` (fo-anil or anil): metarep on all N tasks, the loops on
    `loop_tasks` of them scaled to N, each checked against metarep on those tasks."""
    from metarep.nonlinear.backend import Net

    exact = method == EXACT
    net = Net("relu")
    N = tasks.n_tasks
    sub = tasks.select(slice(0, min(loop_tasks, N)))
    seconds, _ = _median_time(metarep_step(params, tasks, alpha=alpha, exact=exact, net=net), repeats)
    with threads.limited(1):
        one_thread, _ = _median_time(metarep_step(params, tasks, alpha=alpha, exact=exact, net=net), repeats)
    ref = _as_numpy(metarep_step(params, sub, alpha=alpha, exact=exact, net=net)())
    flops = step_flops(exact, N, tasks.m_in, tasks.m_out, tasks.d, params.width,
                       hidden=params.W1.shape[0] if params.layers == 3 else None)
    row: dict[str, Any] = {"method": method, "metarep_s": seconds, "metarep_1thread_s": one_thread, "flops": flops,
                           "gflops": flops / seconds / 1e9}
    for name, make in contenders.items():
        log(f"  {method}: {name} on {sub.n_tasks} tasks")
        try:
            with one_thread_pools():  # their best case: tiny per-task products gain nothing from threads
                t, out = _median_time(make(params, sub, alpha=alpha, exact=exact), loop_repeats)
        except ImportError as err:
            row[f"{name}_s"] = None
            row[f"{name}_note"] = f"skipped: {err}"
            continue
        row[f"{name}_err"] = _check(name, _as_numpy(out), ref)
        row[f"{name}_s"] = t * N / sub.n_tasks
        row[f"speedup_{name}"] = t * N / sub.n_tasks / seconds
    return row


def run_mlp_bench(*, n_tasks=5000, m_in=20, m_out=10, d=50, width=50, layers=2, alpha=0.1,
                  methods=(FIRST_ORDER, EXACT), repeats=15, loop_tasks=100, loop_repeats=3, seed=0, gemm_n=1024,
                  log: Callable[[str], None] = lambda msg: None) -> dict:
    """The whole benchmark: machine load and matrix-product rate (gemm_n^2 products), then each
    method; three layers have hidden = d units in the first."""
    import torch

    load_before = os.getloadavg()
    tasks, params = _setup(n_tasks, m_in, m_out, d, width, seed, layers=layers)
    log("measuring the float64 matrix-product rate")
    gemm_before = measure_gemm_rate(gemm_n)
    contenders = {"higher_loop": higher_loop, "torch_loop": torch_loop}
    rows = [bench_method(m, tasks, params, alpha=alpha, repeats=repeats, loop_tasks=loop_tasks,
                         loop_repeats=loop_repeats, contenders=contenders, log=log) for m in methods]
    gemm = max(gemm_before, measure_gemm_rate(gemm_n))
    for row in rows:
        row["gemm_fraction"] = row["gflops"] * 1e9 / gemm
        for name in contenders:
            if row.get(f"{name}_s"):
                row[f"{name}_ceiling"] = row[f"{name}_s"] * gemm / row["flops"]
    return {"setting": {"N": n_tasks, "m_in": m_in, "m_out": m_out, "d": d, "width": width, "layers": layers,
                        "activation": "relu", "dtype": "float64", "alpha": alpha, "loop_tasks": loop_tasks,
                        "repeats": repeats, "loop_repeats": loop_repeats, "gemm_n": gemm_n},
            "machine": {"cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "threads": threads.count(),
                        "load_before": load_before, "load_after": os.getloadavg(), "gemm_gflops": gemm / 1e9},
            "rows": rows}


def format_mlp_report(result: dict) -> str:
    """Markdown: the setting, the machine's load, one row per method."""
    from metarep.reproduce.common import fmt, markdown_table

    s, m = result["setting"], result["machine"]
    depth = {2: "two-layer", 3: "three-layer"}[s.get("layers", 2)]
    hidden = " = hidden" if s.get("layers", 2) == 3 else ""
    lines = [f"# One outer step of the {depth} relu network (N = {s['N']}, m_in = {s['m_in']}, "
             f"m_out = {s['m_out']}, d{hidden} = k' = {s['d']}, float64)", "",
             f"{m['cores']} cores, metarep's step on {m.get('threads', m['torch_threads'])} threads; load average "
             f"{', '.join(f'{x:.2f}' for x in m['load_before'])} before, "
             f"{', '.join(f'{x:.2f}' for x in m['load_after'])} after; float64 matrix products "
             f"(NumPy BLAS, {s['gemm_n']}^2) at {m['gemm_gflops']:.1f} GFLOP/s. The loops ran on "
             f"{s['loop_tasks']} tasks on one thread, scaled to N; medians of {s['repeats']} (metarep) and "
             f"{s['loop_repeats']} (loops) timed runs. metarep's step runs on the threads the engine gives it; "
             f"'1 thread' is the same step on one.", ""]
    table = markdown_table(
        ("method", "metarep (ms)", "1 thread (ms)", "flop/step", "GFLOP/s", "of matmul rate", "higher loop (s)",
         "x higher", "torch loop (s)", "x torch loop"),
        [(r["method"], fmt(r["metarep_s"] * 1e3), fmt(r["metarep_1thread_s"] * 1e3), f"{r['flops']:.3g}",
          fmt(r["gflops"]), f"{100 * r['gemm_fraction']:.0f}%", fmt(r.get("higher_loop_s")),
          fmt(r.get("speedup_higher_loop")), fmt(r.get("torch_loop_s")), fmt(r.get("speedup_torch_loop")))
         for r in result["rows"]])
    notes = [f"- {r['method']}: {r[k]}" for r in result["rows"] for k in r if k.endswith("_note")]
    return "\n".join(lines) + table + "\n".join(notes) + ("\n" if notes else "") + _targets(result["rows"])


#: (what, required) of each method's step
TARGETS = (("speedup_higher_loop", 100.0, "x the per-task higher loop"), ("gemm_fraction", 0.40, "of the matmul rate"))


def _targets(rows) -> str:
    """Markdown: each method against each target, PASS or FAIL (n/a when a contender was skipped)."""
    lines = ["", "| target | required | measured | result |", "|---|---|---|---|"]
    for r in rows:
        for key, need, what in TARGETS:
            got = r.get(key)
            shown = "-" if got is None else (f"{100 * got:.0f}%" if key == "gemm_fraction" else f"{got:.1f}x")
            wanted = f">= {100 * need:.0f}%" if key == "gemm_fraction" else f">= {need:.0f}x"
            verdict = "n/a" if got is None else ("PASS" if got >= need else "FAIL")
            lines.append(f"| {r['method']}: {what} | {wanted} | {shown} | {verdict} |")
    return "\n".join(lines) + "\n" + _ceilings(rows)


def _ceilings(rows) -> str:
    """Markdown: how far the higher-loop target is from the matrix-product rate. A step at the
    whole rate would be `higher_loop_ceiling` times faster than the loop, so the target of
    `need` x asks for need / ceiling of the rate; above 100% it cannot be met on this machine."""
    need = next(req for key, req, _ in TARGETS if key == "speedup_higher_loop")
    lines = [f"- {r['method']}: a step at the whole matrix-product rate would be {r['higher_loop_ceiling']:.0f}x "
             f"the higher loop, so {need:.0f}x asks for {100 * need / r['higher_loop_ceiling']:.0f}% of the rate"
             for r in rows if r.get("higher_loop_ceiling")]
    return "\n" + "\n".join(lines) + "\n" if lines else ""


def mlp_command(*, n_tasks, m_in, m_out, d, width, alpha, seed, repeats, quick, out, log, layers=2) -> None:
    """What `metarep bench --arch mlp` runs: the report on stdout, and in each --out file
    (.json: the result as JSON; else the Markdown)."""
    import json

    import click

    result = run_mlp_bench(n_tasks=n_tasks, m_in=m_in, m_out=m_out, d=d, width=width, layers=layers, alpha=alpha,
                           seed=seed, repeats=repeats or (2 if quick else 15), loop_tasks=20 if quick else 100,
                           loop_repeats=1 if quick else 3, log=log)
    report = format_mlp_report(result)
    click.echo(report)
    for path in out:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n" if path.suffix.lower() == ".json" else report)
