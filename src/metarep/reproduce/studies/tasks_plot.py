"""The figure of the `tasks` study: perp_norm against t for every N with the infinite-task
curve, perp_norm at each horizon with the fitted plateau, and the excess risk at each horizon."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from metarep.reproduce.studies import page

NAME = "tasks"


def draw(d, rows: list[dict], curves: list[dict], fit: dict, out: Path, *, quick: bool = False) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(16, 5.0), layout="constrained")
    ax, ax2, ax3 = fig.subplots(1, 3)
    fin = [r for r in rows if isinstance(r["N"], int) and r["completed"]]
    _draw_curves(ax, d, curves)
    _draw_plateau(ax2, d, fin, fit)
    _draw_risk(ax3, fin, [r for r in rows if r["N"] not in {"inf", *d.tasks}])
    for a in (ax, ax2, ax3):
        _readable(a, d.tasks if a is not ax else None)
    fig.suptitle(setting_line(d, quick))
    page.save_png(fig, out, NAME)


def setting_line(d, quick: bool) -> str:
    """What every run shares, the seeds, and a mark on a --quick run."""
    from metarep.config.schema import validate

    c = validate(d.config(d.tasks[0], d.horizon, d.seeds[0]))
    p, t = c.problem, c.train
    line = (f"FO-ANIL with N training tasks: d = {p.d}, k = {p.k}, k' = {c.model.width}, m_in = {t.m_in}, "
            f"alpha = {t.alpha:g}, beta = {t.beta:g}, {len(d.seeds)} seeds")
    return line + ("\n--quick: fewer steps, not the study's setting" if quick else "")


def _readable(ax, tasks: list[int] | None) -> None:
    """Log axes labelled 1, 10, 300 (not 3 x 10^1 beside 4 x 10^1); the N axis labelled at the
    values of N only."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    from metarep.plots import log_values, tick_text

    log_values(ax)
    if tasks is not None:
        ax.xaxis.set_major_locator(FixedLocator(sorted(tasks)))
        ax.xaxis.set_major_formatter(FuncFormatter(tick_text))
        ax.xaxis.set_minor_formatter(NullFormatter())
    else:
        ax.xaxis.set_major_formatter(FuncFormatter(tick_text))


def _draw_curves(ax, d, curves: list[dict]) -> None:
    for i, key in enumerate([*d.tasks, "inf"]):
        steps, mean = _mean_curve([c for c in curves if c["N"] == key])
        keep = (steps > 0) & (mean > 0)
        style = {"color": "k", "ls": "--", "lw": 2} if key == "inf" else {"color": f"C{i % 10}"}
        ax.plot(steps[keep], mean[keep], label="infinite tasks" if key == "inf" else f"N = {key}", **style)
    ax.set(xscale="log", yscale="log", xlabel="outer step t", ylabel=r"$\|P_\perp B_t\|_2$ (mean over seeds)",
           title="perp_norm against t")
    ax.legend(fontsize=7)


def _draw_plateau(ax, d, fin: list[dict], fit: dict) -> None:
    for settled, marker in ((True, "o"), (False, "^")):
        sel = [r for r in fin if bool(r["settled"]) == settled]
        if sel:
            ax.errorbar([r["N"] for r in sel], [r["perp_final_mean"] for r in sel],
                        yerr=[page.finite_or_zero(r["perp_final_std"]) for r in sel], marker=marker, ls="none",
                        capsize=3, mfc="C0" if settled else "none", color="C0",
                        label="settled at T" if settled else "not settled at T")
    ax.plot([r["N"] for r in fin], [r["inf_perp_at_T"] for r in fin], "k--", marker="x",
            label="infinite tasks at the same T")
    if fit["exponent"] is not None:
        ns = np.array([min(d.tasks), max(d.tasks)], dtype=float)
        ax.plot(ns, fit["prefactor"] * ns ** fit["exponent"], color="C3", lw=1,
                label=f"fit: N^({fit['exponent']:.3f} +- {fit['exponent_se']:.2g})")
    ax.set(xscale="log", yscale="log", xlabel="training tasks N", ylabel=r"$\|P_\perp B_T\|_2$",
           title="perp_norm at the horizon T")
    ax.legend(fontsize=7)


def _draw_risk(ax, fin: list[dict], references: list[dict]) -> None:
    ax.errorbar([r["N"] for r in fin], [r["excess_risk_mean"] for r in fin],
                yerr=[page.finite_or_zero(r["excess_risk_std"]) for r in fin], marker="o", capsize=3,
                label="FO-ANIL, N tasks")
    ax.plot([r["N"] for r in fin], [r["inf_excess_risk_at_T"] for r in fin], "k--", marker="x",
            label="infinite tasks, same T")
    for j, r in enumerate(references):
        ax.axhline(r["excess_risk_mean"], ls=":", color=f"C{j + 2}", label=r.get("label", r["N"]))
    ax.set(xscale="log", yscale="log", xlabel="training tasks N", ylabel="test excess risk",
           title="excess risk at T")
    ax.legend(fontsize=7)


def _mean_curve(points: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    by: dict[int, list[float]] = {}
    for c in points:
        by.setdefault(int(c["step"]), []).append(c["perp_norm"])
    steps = np.array(sorted(by), dtype=float)
    return steps, np.array([np.mean(by[int(s)]) for s in steps])
