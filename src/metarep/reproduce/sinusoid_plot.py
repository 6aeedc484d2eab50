"""The figure of `metarep reproduce sinusoid`: a few new tasks adapted from their K points, the
share of the features' energy outside span{1, sin x, cos x} over training by noise level, and the
final share against the tuned test MSE."""

from __future__ import annotations

from pathlib import Path

import numpy as np

NOISE_STYLES = ("-", "--", ":", "-.")
FIGURE_TASKS = 3


def _adapted_panel(ax, jobs, results, study) -> None:
    """Seed 0's networks of study.figure_methods (noiseless, K = figure_shots) on FIGURE_TASKS new
    tasks: the true sine, the K points, the prediction after 0, 1 and 10 test-time steps."""
    from metarep.config.schema import validate
    from metarep.families import get_family
    from metarep.families.network import adapt, forward, per_task
    from metarep.methods import get_method

    kept = [(j, r) for j, r in zip(jobs, results) if r.get("params") is not None]
    if not kept:
        return
    config = validate(kept[0][0]["config"])
    family = get_family(config.problem.family)
    truth = family.make(config.problem, None)
    K = kept[0][0]["K"]
    tasks = family.sample_tasks(truth, FIGURE_TASKS, K, 0, np.random.default_rng(2017))
    lo, hi = truth.input_range
    grid = np.linspace(float(lo), float(hi), 200)[None, :, None].repeat(FIGURE_TASKS, axis=0)
    clean = np.einsum("tqk,tk->tq", truth.teacher_features(grid), np.asarray(tasks.w_star))
    for t in range(FIGURE_TASKS):
        ax.plot(grid[t, :, 0], clean[t] + 8 * t, c="k", lw=1.2, label="true function" if t == 0 else None)
        ax.plot(tasks.X_in[t, :, 0], tasks.y_in[t] + 8 * t, "o", c="k", ms=5,
                label=f"K = {K} points" if t == 0 else None)
    for i, (job, res) in enumerate(kept):
        p = res["params"]
        body = {k: a for k, a in p.items() if k != "w" and a.shape[0]}
        w = p["w"] if p["w"].ndim == 1 else p["w"].mean(axis=0)
        adapt_body = getattr(get_method(job["method"], "mlp").gradient, "per_task_body", False)
        P, done = per_task(body, w, FIGURE_TASKS), 0
        for steps, ls in ((0, ":"), (1, "--"), (10, "-")):
            P = adapt(P, tasks.X_in, tasks.y_in, activation="relu", alpha=config.train.alpha, steps=steps - done,
                      body=adapt_body)
            done = steps
            f, _ = forward(P, grid, "relu")
            for t in range(FIGURE_TASKS):
                ax.plot(grid[t, :, 0], f[t] + 8 * t, c=f"C{i}", ls=ls, lw=1.3,
                        label=f"{job['method']}, {steps} step{'s' if steps != 1 else ''}" if t == 0 else None)
    ax.set(xlabel="x", ylabel="y (tasks offset by 8)", title=f"new tasks adapted from K = {K} points (sigma = 0)")
    ax.legend(fontsize=7, loc="upper left")


def _curves_panel(ax, jobs, results, study) -> None:
    """Mean over seeds of span_outside against the step, per iterative method and noise level, at
    K = figure_shots (the long runs where there are some)."""
    from metarep.plots import step_axis

    K = study["figure_shots"]
    methods = [m for m in study["methods"] if any(r["steps"] for j, r in zip(jobs, results) if j["method"] == m)]
    for i, method in enumerate(methods):
        for n, noise in enumerate(study["noise"]):
            curves = [r["curve"] for j, r in zip(jobs, results)
                      if (j["method"], j["K"], j["noise"]) == (method, K, float(noise)) and r["status"] == "completed"]
            if not curves:
                continue
            steps = [row["step"] for row in curves[0]]
            mean = np.mean([[row["span_outside"] for row in c] for c in curves if len(c) == len(steps)], axis=0)
            ax.plot(steps, mean, c=f"C{i}", ls=NOISE_STYLES[n % len(NOISE_STYLES)], lw=1.5,
                    label=f"{method}, sigma = {noise:g}")
    step_axis(ax)
    ax.set(ylabel="share of phi's energy outside span{1, sin, cos}", title=f"unlearning, K = {K} (mean over seeds)")
    ax.legend(fontsize=6, ncol=2)


def _scatter_panel(ax, jobs, results, study) -> None:
    """Each trained run at K = figure_shots: final span_outside against the tuned test MSE."""
    K = study["figure_shots"]
    methods = [m for m in study["methods"] if any(r["steps"] for j, r in zip(jobs, results) if j["method"] == m)]
    markers = ("o", "s", "^", "D")
    for i, method in enumerate(methods):
        for n, noise in enumerate(study["noise"]):
            pts = [(r["span_end"], r["tuned"]) for j, r in zip(jobs, results)
                   if (j["method"], j["K"], j["noise"]) == (method, K, float(noise)) and r["status"] == "completed"
                   and r["tuned"] is not None]
            if pts:
                x, y = np.array(pts).T
                ax.scatter(x, y, c=f"C{i}", marker=markers[n % len(markers)], s=22,
                           label=f"{method}, sigma = {noise:g}" if len(study["noise"]) * len(methods) <= 12 or n == 0
                           else None)
    ax.set(xlabel="final share of energy outside the span", ylabel="test MSE, tuned rule",
           title=f"unlearning against test MSE, K = {K}")
    ax.set_yscale("log")
    ax.legend(fontsize=6, ncol=2)


def plot(path: Path, jobs: list[dict], results: list[dict], study: dict, *, long=(), quick: bool = False) -> None:
    from matplotlib.figure import Figure

    from metarep.plots import save_figure, setting_title

    fig = Figure(figsize=(14, 4.6), layout="constrained")
    axes = fig.subplots(1, 3)
    _adapted_panel(axes[0], jobs, results, study)
    if long:
        _curves_panel(axes[1], [j for j, _ in long], [r for _, r in long], study)
    else:
        _curves_panel(axes[1], jobs, results, study)
    _scatter_panel(axes[2], jobs, results, study)
    steps = jobs[0]["config"]["train"]["steps"] if jobs else 0
    fig.suptitle(setting_title("MAML's sinusoid regression", f"1-40-40-1 relu net, Adam, {steps} outer steps, "
                               "25 tasks per step", quick))
    save_figure(fig, path)
