"""The figure of `metarep reproduce nonlinear`: W1's align and perp norms and the
representation's effective rank over training, one line per (network, m_in)."""

from __future__ import annotations

from pathlib import Path

PANELS = (("align_norm", r"$\|W_1 B_*\|_2$"), ("perp_norm", r"$\|W_1 (I - B_* B_*^\top)\|_2$"),
          ("effective_rank", r"effective rank of $\mathrm{Cov}\,\phi(x)$"))


def plot_curves(path: Path, curves: list[tuple[dict, dict]], *, quick: bool = False) -> None:
    """curves: (job with teacher, activation, m_in and its config; result with its curve rows)."""
    from matplotlib.figure import Figure

    from metarep.plots import config_setting, curve_style, log_values, save_figure, setting_title, step_axis

    fig = Figure(figsize=(14, 4.8), layout="constrained")
    axes = fig.subplots(1, 3)
    for i, (job, res) in enumerate(curves):
        rows = [r for r in res["curve"] if r.get("perp_norm") is not None]
        label = f"{job['activation']} net, {job['teacher']} teacher, m_in = {job['m_in']}"
        for ax, (key, _) in zip(axes, PANELS):
            ax.plot([r["step"] for r in rows], [r[key] for r in rows], **curve_style(i), label=label)
    for ax, (key, title) in zip(axes, PANELS):
        step_axis(ax)
        ax.set(ylabel=title, title=title)
        if key != "effective_rank":
            log_values(ax)
    axes[0].legend(fontsize=7)
    methods = sorted({job["method"] for job, _ in curves})
    setting = config_setting(curves[0][0]["config"]) if curves else ""
    fig.suptitle(setting_title(f"{', '.join(methods)} on the network, fresh tasks every step", setting, quick))
    save_figure(fig, path)
