"""The figure of `metarep reproduce nonlinear`: the controls' measures of unlearning over
training, one row per (network, teacher), one line per m_in: the mean over seeds and a band from
the smallest to the largest seed. The population update of the linear model (where run) is drawn
dashed in the perp_ratio panel of the identity network on the linear teacher, which starts where
it starts."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

PANELS = (("perp_ratio", "perp_norm / align_norm of W1"),
          ("grad_perp_share", "input-gradient energy outside span(B*)"),
          ("effective_rank", "effective rank of Cov phi(x)"), ("r2", "R^2 of the teacher's features"))


def plot_controls(path: Path, runs: list[dict], controls: dict, *, quick: bool = False) -> None:
    from matplotlib.figure import Figure

    from metarep.plots import curve_style, save_figure, setting_title, step_axis

    nets = [(f"{a} net", t) for a, t in controls["nets"]]
    fig = Figure(figsize=(16, 3.4 * len(nets)), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(nets), len(PANELS)))
    by: dict[tuple, list[dict]] = defaultdict(list)
    for r in runs:
        if r["status"] == "completed":
            by[(r["net"], r["teacher"], r["m_in"])].append(r)
    for row, (net, teacher) in enumerate(nets):
        for i, m_in in enumerate(controls["m_in"]):
            for ax, (key, _) in zip(axes[row], PANELS):
                _band(ax, by.get((net, teacher, m_in), []), key, curve_style(i), f"m_in = {m_in}")
            if (net, teacher) == ("identity net", "linear"):
                _band(axes[row][0], by.get(("linear model, population", teacher, m_in), []), "perp_ratio",
                      {**curve_style(i), "ls": "--", "marker": None}, f"m_in = {m_in}, population")
        for ax, (key, title) in zip(axes[row], PANELS):
            step_axis(ax)
            ax.set(title=f"{net}, {teacher} teacher", ylabel=title)
            if key in ("perp_ratio", "grad_perp_share"):
                ax.set_yscale("log")
        axes[row][0].legend(fontsize=7)
    fig.suptitle(setting_title(f"{controls['method']} on fresh tasks ({controls['batch_tasks']} a step), mean over "
                               f"{controls['seeds']} seeds and their range", "", quick))
    save_figure(fig, path)


def _band(ax, runs: list[dict], key: str, style: dict, label: str) -> None:
    if not runs:
        return
    steps = [r["step"] for r in runs[0]["curve"] if r["step"] > 0]
    values = np.array([[row.get(key) if row.get(key) is not None else np.nan for row in r["curve"]
                        if row["step"] > 0] for r in runs], dtype=np.float64)
    if values.size == 0:
        return
    ax.plot(steps, np.nanmean(values, axis=0), **style, label=label)
    ax.fill_between(steps, np.nanmin(values, axis=0), np.nanmax(values, axis=0), color=style.get("color"), alpha=0.15)
