"""Figure 1 of the paper: align_norm, perp_norm and mean_norm over training, log axes, for
FO-ANIL (finite tasks, infinite tasks, infinite samples), FO-MAML and Burer-Monteiro, with the
theory drawn in: sqrt(lambda_max(Lambda*)) for align_norm and the Lemma 2 decay of
perp_norm^2 (MATH 5).

The curves are the table's rows (experiments/table1) for one seed, listed in
experiments/figure1.toml; the same steps as the table, measured at log-spaced steps.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from metarep.config.schema import ConfigError, validate
from metarep.linear.theory import lambda_star, lemma2_asymptote, lemma2_perp_sq
from metarep.reproduce.common import (
    compose,
    experiments_dir,
    fmt,
    log_points,
    machine_line,
    markdown_table,
    parallel_map,
    trace,
    with_seed,
    write_csv,
    write_text,
)

COLUMNS = ("curve", "label", "step", "loss", "align_norm", "perp_norm", "mean_norm", "sigma_min", "lambda_rel_err",
           "align_theory", "perp_lemma2_bound", "perp_lemma2_asymptote")
PANELS = (("align_norm", r"$\|B_*^\top B_t\|_2$"), ("perp_norm", r"$\|P_\perp B_t\|_2$"),
          ("mean_norm", r"$\|B_t w_t - B_*\mu_*\|_2$"))


def trace_job(job: dict) -> dict:
    """Train one curve, measuring at log-spaced steps; return its history and theory inputs."""
    from metarep.engine import build

    config = validate(job["config"])
    exp = build(config)
    state = trace(exp, log_points(config.train.steps, job["points"]))
    t, p = config.train, exp.problem  # type: ignore[attr-defined]  # a linear experiment
    return {"key": job["key"], "label": job["label"], "history": state.history, "status": state.status,
            "message": state.message, "theory": config.method_spec.theory, "regime": exp.regime, "alpha": t.alpha,
            "beta": t.beta,
            "m_in": float("inf") if t.m_in == "inf" else float(t.m_in), "noise_std": p.noise_std,
            "Sigma_star": p.Sigma_star.tolist(), "steps": t.steps}


def _theory(curve: dict) -> tuple[float | None, np.ndarray, np.ndarray]:
    """sqrt(lambda_max(Lambda*)) (methods whose curve the theory describes), and the Lemma 2 bound iterated from the
    curve's initial perp_norm^2 and its asymptote m_in / (alpha^2 beta sigma^2 t), at the curve's steps."""
    steps = np.array([r["step"] for r in curve["history"]], dtype=float)
    if not curve["theory"]:
        return None, np.full(steps.shape, np.nan), np.full(steps.shape, np.nan)
    a, b, s, m = curve["alpha"], curve["beta"], curve["noise_std"], curve["m_in"]
    lam = lambda_star(np.array(curve["Sigma_star"]), s, a, m)
    level = float(np.sqrt(np.linalg.eigvalsh(lam).max()))
    perp0 = curve["history"][0]["perp_norm"] ** 2
    bound = np.sqrt(lemma2_perp_sq(steps, perp0, a, b, s, m))
    with np.errstate(divide="ignore"):
        asym = np.sqrt(lemma2_asymptote(steps, a, b, s, m)) if np.isfinite(m) else np.full(steps.shape, np.nan)
    asym[steps == 0] = np.nan
    return level, bound, asym


def late_slope(steps, values, *, start_fraction: float = 0.1) -> float:
    """Least-squares slope of log(values) against log(steps) over steps >= start_fraction * last."""
    steps, values = np.asarray(steps, float), np.asarray(values, float)
    keep = (steps >= start_fraction * steps.max()) & (steps > 0) & (values > 0) & np.isfinite(values)
    if keep.sum() < 3:
        return float("nan")
    return float(np.polyfit(np.log(steps[keep]), np.log(values[keep]), 1)[0])


def setting_line(config: dict, seed: int, quick: bool) -> str:
    """The setting every curve shares (each curve's N and m_in are in its label), and a quick mark."""
    from metarep.plots import QUICK_MARK, config_setting

    return config_setting(config) + f", seed {seed}" + (f"; {QUICK_MARK}" if quick else "")


def draw(curves: list[dict], path: Path, setting: str = "") -> None:
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    from metarep.plots import curve_style, draw_lemma2, log_values, save_figure, tick_text

    fig = Figure(figsize=(16, 5.6), layout="constrained")
    axes = fig.subplots(1, 3)
    levels: dict[float, tuple] = {}
    zeros: dict[str, list[str]] = {key: [] for key, _ in PANELS}
    for i, curve in enumerate(curves):
        style = curve_style(i)
        steps = np.array([r["step"] for r in curve["history"]], dtype=float)
        level, bound, asym = _theory(curve)
        for ax, (key, _) in zip(axes, PANELS):
            ys = np.array([r[key] for r in curve["history"]])
            keep = (steps > 0) & (ys > 0)
            if not keep.any():
                zeros[key].append(curve["label"])
                continue
            ax.plot(steps[keep], ys[keep], **style, label=curve["label"] + ("" if curve["status"] == "completed"
                                                                            else f" ({curve['status']})"))
        if level is not None:
            levels.setdefault(round(level, 12), (level, curve["m_in"], style["color"]))
        if np.isfinite(curve["m_in"]) and curve["theory"] and curve["regime"] == "population":
            draw_lemma2(axes[1], steps[steps > 0].tolist(), curve["history"][0]["perp_norm"], alpha=curve["alpha"],
                        beta=curve["beta"], noise_std=curve["noise_std"], m_in=curve["m_in"])
    for level, m_in, c in levels.values():
        name = r"\infty" if not np.isfinite(m_in) else f"{m_in:g}"
        axes[0].axhline(level, ls=":", color=c, lw=1.2,
                        label=rf"$\sqrt{{\lambda_{{\max}}(\Lambda_*)}}$, $m_{{in}}={name}$")
    for ax, (key, label) in zip(axes, PANELS):
        ax.set(xscale="log", xlabel="outer step t", title=label)
        ax.xaxis.set_major_formatter(FuncFormatter(tick_text))
        log_values(ax)
        if zeros[key]:  # under the axis, where no curve runs
            ax.set_xlabel("outer step t\nidentically 0 (not drawn): " + "; ".join(zeros[key]), fontsize=9)
    handles: dict = {}
    for ax in axes:  # one legend for the figure: the same curve in every panel
        for line in ax.get_lines():
            handles.setdefault(line.get_label(), line)
    fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncol=4, fontsize=8)
    fig.suptitle("Evolution of the representation (one seed)" + (f"\n{setting}" if setting else ""))
    save_figure(fig, path, formats=("png", "svg"))


def summarize(curves: list[dict]) -> tuple[list[dict], list[str]]:
    rows, notes = [], []
    for curve in curves:
        h = curve["history"]
        last, first = h[-1], h[0]
        level, bound, asym = _theory(curve)
        steps = [r["step"] for r in h]
        slope = late_slope(steps, [r["perp_norm"] ** 2 for r in h])
        rows.append({"curve": curve["key"], "label": curve["label"], "status": curve["status"], "steps": last["step"],
                     "align_final": last["align_norm"], "align_theory": level,
                     "perp_initial": first["perp_norm"], "perp_final": last["perp_norm"],
                     "perp_lemma2_bound": float(bound[-1]), "perp_lemma2_asymptote": float(asym[-1]),
                     "perp_sq_late_slope": slope, "mean_final": last["mean_norm"]})
    by = {r["curve"]: r for r in rows}
    for r in rows:
        if r["align_theory"] is not None and r["status"] == "completed":
            dev = r["align_final"] / r["align_theory"] - 1
            notes.append(f"{r['label']}: align_norm ends at {fmt(r['align_final'])}, {fmt(100 * dev, 2)}% from "
                         f"sqrt(lambda_max(Lambda*)) = {fmt(r['align_theory'])}.")
    inf = by.get("fo_anil_inf_tasks")
    if inf and inf["status"] == "completed":
        notes.append(f"FO-ANIL, infinite tasks: perp_norm falls from {fmt(inf['perp_initial'])} to "
                     f"{fmt(inf['perp_final'])} in {inf['steps']} steps; the late log-log slope of perp_norm^2 is "
                     f"{fmt(inf['perp_sq_late_slope'])} (Lemma 2's asymptote: -1); it ends "
                     f"{fmt(inf['perp_final'] / inf['perp_lemma2_asymptote'])} times the Lemma 2 asymptote "
                     f"sqrt(m_in/(alpha^2 beta sigma^2 t)), below the iterated bound "
                     f"{fmt(inf['perp_lemma2_bound'])}" + ("." if inf["perp_final"] <= inf["perp_lemma2_bound"]
                                                            else " (ABOVE it: check)."))
    samp = by.get("fo_anil_inf_samples")
    if samp and samp["status"] == "completed":
        notes.append(f"FO-ANIL, infinite samples: perp_norm goes from {fmt(samp['perp_initial'])} to "
                     f"{fmt(samp['perp_final'])}: it is not unlearned (no noise in the inner step).")
    fin = by.get("fo_anil")
    if fin and fin["status"] == "completed":
        notes.append(f"FO-ANIL, N tasks: perp_norm goes from {fmt(fin['perp_initial'])} to {fmt(fin['perp_final'])} "
                     f"in {fin['steps']} steps; late log-log slope of perp_norm^2 {fmt(fin['perp_sq_late_slope'])}.")
    for r in rows:
        if r["status"] != "completed":
            notes.append(f"{r['label']}: {r['status']}.")
    notes.append("mean_norm at the end: " + ", ".join(f"{r['label']} {fmt(r['mean_final'])}" for r in rows)
                 + " (exactly 0 means w never leaves w_0 = 0: with mu* = 0 the expected head gradient vanishes).")
    return rows, notes


def figure1(out: Path, *, quick: bool = False, workers: int = 2, experiments=None,
            echo: Callable[[str], None] = print) -> dict:
    """Write out/figure1.png, figure1.svg, figure1.csv and figure1.md."""
    start = time.perf_counter()
    machine = machine_line(workers)
    folder = experiments_dir(experiments)
    _, meta = compose([folder / "figure1.toml"], quick=quick)
    fig = meta.get("figure", {})
    keys, seed, points = fig.get("rows", []), int(fig.get("seed", 0)), int(fig.get("points", 150))
    base = folder / "table1" / "base.toml"
    files = {p.stem.split("_", 1)[1]: p for p in (folder / "table1").glob("[0-9]*_*.toml")}
    jobs = []
    for key in keys:
        if key not in files:
            raise ConfigError(f"figure1.toml: unknown table1 row {key!r}; known: {', '.join(sorted(files))}")
        data, row_meta = compose([base, files[key]], quick=quick)
        data = with_seed(data, seed)
        validate(data)
        jobs.append({"key": key, "label": row_meta.get("row", {}).get("label", key), "config": data,
                     "points": points})
    costs = [float(validate(j["config"]).train.steps) * (1 if validate(j["config"]).train.tasks == "inf" else 60)
             for j in jobs]
    echo(f"figure1: {len(jobs)} curves on {workers} worker(s)")
    curves = parallel_map(trace_job, jobs, workers=workers, costs=costs,
                          on_done=lambda i, r, s: echo(f"  {r['key']}: {r['status']} in {s:.1f} s"))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    draw(curves, out / "figure1.png", setting_line(jobs[0]["config"], seed, quick) if jobs else "")
    table_rows = []
    for curve in curves:
        level, bound, asym = _theory(curve)
        for row, b, a in zip(curve["history"], bound, asym):
            table_rows.append({"curve": curve["key"], "label": curve["label"], **row, "align_theory": level,
                               "perp_lemma2_bound": b, "perp_lemma2_asymptote": a})
    write_csv(out / "figure1.csv", table_rows, COLUMNS)
    rows, notes = summarize(curves)
    wall = time.perf_counter() - start
    body = [[r["label"], r["steps"], fmt(r["align_final"]), fmt(r["align_theory"]), fmt(r["perp_initial"]),
             fmt(r["perp_final"]), fmt(r["perp_lemma2_asymptote"]), fmt(r["perp_sq_late_slope"]), fmt(r["mean_final"])]
            for r in rows]
    text = "\n".join([
        f"# Figure 1: evolution of the representation{' (quick run)' if quick else ''}", "",
        f"Seed {seed}; the table's settings (experiments/table1) for each curve. Wall time {wall:.1f} s ({machine}).",
        "", "![figure1](figure1.png)", "",
        markdown_table(["curve", "steps", "align_norm", "sqrt(lambda_max(Lambda*))", "perp_norm at 0",
                        "perp_norm at end", "Lemma 2 asymptote at end", "late slope of perp_norm^2",
                        "mean_norm at end"], body),
        "Theory (FO-ANIL only): Lambda* of MATH 5 for the curve's m_in; Lemma 2: "
        "||P_perp B_t||^2 <~ m_in / (alpha^2 beta sigma^2 t). Late slope: log-log least squares over the last "
        "decade of steps.", "", "## Findings (measured)", ""] + [f"- {n}" for n in notes] + [""])
    write_text(out / "figure1.md", text)
    echo(text)
    echo(f"figure1: wall time {wall:.1f} s; wrote {out / 'figure1.png'}, .svg, .csv, .md")
    return {"curves": curves, "rows": rows, "wall_s": wall}
