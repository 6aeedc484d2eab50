"""The real-data reproduction's figure and Markdown page (reproduce/realdata.py computes them).

`d` is the reproduction's Design (datasets, m_test, splits, references, exported tables)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from metarep.config.schema import validate
from metarep.methods import get_method
from metarep.reproduce.common import deep_merge, fmt, markdown_table
from metarep.reproduce.studies import page

# A panel's value axis stops at this multiple of its median MSE (runaway rules noted instead).
RUNAWAY = 2.5


def draw(d: Any, rows: list[dict], out: Path, name: str, *, quick: bool = False) -> None:
    """Test MSE against m_test, one panel per dataset, one curve per rule (mean ± SE over splits)."""
    from matplotlib.figure import Figure

    from metarep.plots import curve_style, setting_title

    cols = min(2, len(d.datasets))
    rows_ = -(-len(d.datasets) // cols)
    fig = Figure(figsize=(5.2 * cols, 3.6 * rows_ + 1.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows_, cols, squeeze=False).ravel())
    for ax in axes[len(d.datasets):]:
        ax.set_visible(False)
    labels = list(dict.fromkeys(r["rule"] for r in rows))
    for ax, dataset in zip(axes, d.datasets):
        for i, label in enumerate(labels):
            line = [r for r in rows if r["dataset"] == dataset and r["rule"] == label and r.get("mse") is not None]
            if line:  # rules that coincide (fo-anil, anil, fo-maml) told apart by line style and marker
                style = {**curve_style(i), "markevery": 1}
                ax.errorbar([r["m_test"] for r in line], [r["mse"] for r in line],
                            yerr=[r["mse_se"] for r in line], capsize=3, label=label, **style)
        _clip_runaways(ax, [r for r in rows if r["dataset"] == dataset])
        ax.set_xscale("log")
        ax.set_xticks(d.m_test, [str(m) for m in d.m_test])
        ax.set_xticks([], minor=True)
        ax.set(title=dataset, xlabel="m_test (rows of a new school adapted on)", ylabel="test MSE")
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncol=4, fontsize=8)
    m = validate(deep_merge(d.data, {"data": {"dataset": d.datasets[0]}})).train
    splits = f"{d.splits} split{'s' if d.splits > 1 else ''}"
    fig.suptitle(setting_title(f"Held-out schools: test MSE (standardised target), mean ± SE over {splits}",
                               f"m_in = {m.m_in}, m_out = {m.m_out}, {m.steps} steps", quick), fontsize=10)
    page.save_png(fig, out, name)


def render(d: Any, rows: list[dict], runs: list[dict], notes: list[str], name: str, *, quick: bool, wall: float,
           machine: str) -> str:
    """The reproduction's Markdown page: settings, figure, findings, the MSE table, the paired
    differences and the learned B's ranks."""
    lines = [f"# Real multi-task data: held-out schools{' (quick run)' if quick else ''}", "",
             f"Settings: `experiments/realdata/realdata.toml`. Wall time {wall:.1f} s ({machine}).", "",
             *_features_lines(d), f"![{name}]({name}.png)", ""]
    lines += page.findings_block(notes)
    head = ["dataset", "rule", *[f"m_test = {m}" for m in d.m_test]]
    table = []
    for dataset in d.datasets:
        for label in dict.fromkeys(r["rule"] for r in rows):
            cells = [r for r in rows if r["dataset"] == dataset and r["rule"] == label]
            table.append([dataset, label, *[f"{fmt(r.get('mse'))} ± {fmt(r.get('mse_se'), 2)}"
                                            + (f" ({r['chosen']})" if r.get("chosen") else "") for r in cells]])
    lines += ["## Test MSE, mean ± SE over held-out schools and splits", "",
              "`(tuned)`: the rule chosen on the validation schools (in brackets, with its count over splits).", "",
              markdown_table(head, table)]
    diff = [[r["dataset"], r["rule"], r["m_test"], *(f"{fmt(r.get(k))} ± {fmt(r.get(k + '_se'), 2)} "
                                                     f"[{fmt(r.get(k + '_low'))}, {fmt(r.get(k + '_high'))}] "
                                                     f"{r.get(k + '_verdict', '')}" for k in d.references)]
            for r in rows]
    lines += ["## Paired differences (negative: lower MSE than the reference)", "",
              "Mean ± SE over schools and splits, the 95% t-interval of the per-split means (n = splits) and the "
              "verdict (better or worse only when the interval excludes zero).", "",
              markdown_table(["dataset", "rule", "m_test", *(f"minus {ref}" for ref in d.references.values())],
                             diff)]
    lines += ["## The learned B (methods with a fixed B = I_d left out)", "",
              markdown_table(["dataset", "method", "d", "design rank", "width k'", "effective rank", "at step 0",
                              "rank (rel. tol 1e-2), per split", "completed"], _rank_rows(runs))]
    return "\n".join(lines)


def _features_lines(d: Any) -> list[str]:
    """The features of each exported table (the rule: every column but the task, the target and
    the dataset's `exclude`)."""
    if not d.tables:
        return []
    return ["Features (every column but the task, the target and those excluded in the settings, a rule fixed "
            "before any score was seen): " + "; ".join(f"{ds}: {', '.join(t['features'])}"
                                                        for ds, t in d.tables.items()) + ".", ""]


def _rank_rows(runs: list[dict]) -> list[list]:
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in runs:
        if get_method(r["method"]).fixed_width is None:
            groups.setdefault((r["dataset"], r["method"]), []).append(r)
    return [[ds, method, g[0].get("d"), g[0].get("design_rank"), g[0].get("width"),
             fmt(np.mean([r.get("effective_rank", np.nan) for r in g])),
             fmt(np.mean([r.get("effective_rank_0", np.nan) for r in g])), "/".join(str(r.get("rank")) for r in g),
             sum(r["status"] == "completed" for r in g)] for (ds, method), g in groups.items()]


def _clip_runaways(ax, rows: list[dict]) -> None:
    """Keep the axis on the curves that stay in range: a rule that runs away on some split (a mean of
    1e26) would flatten every other curve. The axis stops at RUNAWAY x the panel's median MSE; the
    means above it are named in a note in the panel."""
    values = [r["mse"] for r in rows if r.get("mse") is not None and np.isfinite(r["mse"])]
    if not values:
        return
    top = RUNAWAY * float(np.median(values))
    off = [r for r in rows if r.get("mse") is not None and not r["mse"] <= top]
    if not off:
        return
    low = min(v - (r.get("mse_se") or 0.0) for r, v in ((r, r["mse"]) for r in rows
                                                       if r.get("mse") is not None and r["mse"] <= top))
    ax.set_ylim(max(0.0, 0.95 * low), top)
    note = "off scale: " + "; ".join(f"{r['rule']} at m_test {r['m_test']}: {fmt(r['mse'])}" for r in off)
    ax.text(0.02, 0.98, note, transform=ax.transAxes, va="top", fontsize=6, wrap=True,
            bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "0.7"})
