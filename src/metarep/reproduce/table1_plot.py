"""Table 1's figure (reproduce/table1.py computes the table)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def draw(table: list[dict], path: Path, *, setting: str = "", quick: bool = False) -> None:
    """Excess risk of every row (mean +- std over seeds), the paper's value where it gives one;
    the title names the setting and marks a --quick run (whose numbers are not the paper's)."""
    from matplotlib.figure import Figure

    from metarep.plots import save_figure, setting_title

    done = [r for r in table if r["completed"]]
    fig = Figure(figsize=(9, 0.45 * len(done) + 1.2))
    ax = fig.subplots()
    y = np.arange(len(done))[::-1]
    ax.barh(y, [r["excess_risk_mean"] for r in done], xerr=[r["excess_risk_std"] or 0.0 for r in done],
            color="C0", capsize=3, label="own test-time rule (mean +- std over seeds)")
    tuned = [(yi, r["tuned_risk_mean"]) for yi, r in zip(y, done) if r["tuned_risk_mean"] is not None]
    if tuned:
        ax.plot([v for _, v in tuned], [yi for yi, _ in tuned], "o", color="C1",
                label="tuned rule (chosen on validation tasks)")
    paper = [(yi, float(r["paper"].split()[0])) for yi, r in zip(y, done) if r["paper"]]
    if paper:
        ax.plot([v for _, v in paper], [yi for yi, _ in paper], "k^", label="the paper's value")
    ax.set_yticks(y, [f"{r['label']} ({r['steps']} steps)" if r["steps"] else r["label"] for r in done], fontsize=8)
    ax.set_xlabel("test excess risk")
    ax.set_title(setting_title("Table 1: test excess risk after adaptation", setting, quick), fontsize=9)
    ax.legend(fontsize=8)
    save_figure(fig, path, formats=("png",))
