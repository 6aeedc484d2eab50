"""Study `rates`: the unlearning rate of perp_norm^2 against alpha, beta and m_in, fitted on the
late phase and compared with Lemma 2's m_in / (alpha^2 beta sigma^2 t).

Settings: experiments/studies/rates.toml ([study]: the grid, the fit window, the curves drawn).
Exact infinite-task FO-ANIL; the grid is split over the workers, each part one batched
population run. Writes rates.md, rates.csv, rates_summary.json and rates.png.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from metarep.config.schema import validate
from metarep.linear.theory import lemma2_asymptote, lemma2_rate
from metarep.reproduce.common import (
    deep_merge,
    fmt,
    load_study,
    log_points,
    machine_line,
    markdown_table,
    parallel_map,
    with_seed,
    write_csv,
)
from metarep.reproduce.figure1 import late_slope
from metarep.reproduce.jobs import population_job
from metarep.reproduce.studies import page

NAME = "rates"


@dataclass(frozen=True)
class Design:
    base: dict                   # config data with the seed
    grid: list[tuple[float, float, int]]       # (alpha, beta, m_in)
    points: list[int]
    fit_from: float              # the late phase: t in [fit_from T, T]
    show: tuple[float, float]    # (alpha, beta) of the curves drawn

    def config(self, a: float, b: float, m: int) -> dict:
        return deep_merge(self.base, {"train": {"alpha": a, "beta": b, "m_in": m}})


def design(data: dict, study: dict) -> Design:
    base = with_seed(data, int(study.get("seed", 0)))
    steps = validate(base).train.steps
    show = (float(study.get("show_alpha", study["alpha"][len(study["alpha"]) // 2])),
            float(study.get("show_beta", study["beta"][-1])))
    grid = [(float(a), float(b), int(m)) for a in study["alpha"] for b in study["beta"] for m in study["m_in"]]
    return Design(base, grid, log_points(steps, int(study.get("points", 100))), float(study.get("fit_from", 0.1)),
                  show)


def plan(d: Design, workers: int) -> tuple[list[dict], list[float]]:
    """The grid split into `workers` parts (point i in part i mod parts), one batched run each."""
    parts = max(1, min(workers, len(d.grid)))
    configs = [d.config(*g) for g in d.grid]
    jobs = [{"configs": configs[i::parts], "points": d.points, "test": False, "tag": f"part {i + 1}/{parts}"}
            for i in range(parts)]
    return jobs, [1.0] * parts


def aggregate(d: Design, results: list[list[dict]]) -> tuple[list[dict], list[dict]]:
    """(rows of rates.csv, the run of every grid point in grid order)."""
    parts = len(results)
    runs = [results[i % parts][i // parts] for i in range(len(d.grid))]
    cfg = validate(d.base)
    sigma = cfg.problem.noise_std
    rows = []
    for (a, b, m), r in zip(d.grid, runs):
        h = r["history"] if r["status"] == "completed" else []
        st = np.array([x["step"] for x in h], dtype=float)
        x2 = np.array([x["perp_norm"] ** 2 for x in h])
        c_meas = float(x2[-1] * st[-1]) if h else float("nan")
        c_lemma = 1.0 / lemma2_rate(a, b, sigma, m)
        rows.append({"alpha": a, "beta": b, "m_in": m, "status": r["status"],
                     "perp_sq_initial": float(x2[0]) if h else None, "perp_sq_final": float(x2[-1]) if h else None,
                     "late_slope": late_slope(st, x2, start_fraction=d.fit_from) if h else float("nan"),
                     "C_measured": c_meas, "C_lemma2": c_lemma, "ratio": c_meas / c_lemma,
                     "lambda_rel_err": r["lambda_rel_err"]})
    return rows, runs


def _trace_sigma(config) -> float:
    from metarep.families.problem import as_covariance

    return float(np.trace(np.atleast_2d(as_covariance(config.problem.task_cov, config.problem.k))))


def summarize(d: Design, rows: list[dict]) -> dict:
    """rates_summary.json: the slopes, the ratios to Lemma 2's constant, the power-law fit of C
    and the constant the population update restricted to B*_perp suggests."""
    cfg = validate(d.base)
    sigma, tr = cfg.problem.noise_std, _trace_sigma(cfg)
    ok = [r for r in rows if r["status"] == "completed" and np.isfinite(r["C_measured"]) and r["C_measured"] > 0]
    out: dict = {"points": len(ok), "steps": d.points[-1], "fit_from": d.fit_from, "trace_sigma": tr,
                 "suggested_ratio": sigma ** 2 / (2 * (sigma ** 2 + tr))}
    if ok:
        slopes, ratios = np.array([r["late_slope"] for r in ok]), np.array([r["ratio"] for r in ok])
        out.update(slope_median=float(np.median(slopes)), slope_min=float(slopes.min()),
                   slope_max=float(slopes.max()), ratio_median=float(np.median(ratios)),
                   ratio_min=float(ratios.min()), ratio_max=float(ratios.max()))
    if len(ok) >= 4:
        X = np.column_stack([np.ones(len(ok)), np.log([r["alpha"] for r in ok]), np.log([r["beta"] for r in ok]),
                             np.log([r["m_in"] for r in ok])])
        coef = np.linalg.lstsq(X, np.log([r["C_measured"] for r in ok]), rcond=None)[0]
        out["fit"] = {"alpha": float(coef[1]), "beta": float(coef[2]), "m_in": float(coef[3])}
    return out


def findings(s: dict) -> list[str]:
    if not s["points"]:
        return ["No grid point completed."]
    notes = [f"Late-phase slope of log perp_norm^2 against log t (steps >= {s['fit_from']:g} T): median "
             f"{fmt(s['slope_median'])}, range {fmt(s['slope_min'])} to {fmt(s['slope_max'])} over {s['points']} "
             "points (Lemma 2: -1).",
             f"Measured constant C = perp_norm^2(T) T against Lemma 2's m_in / (alpha^2 beta sigma^2): ratio median "
             f"{fmt(s['ratio_median'])}, range {fmt(s['ratio_min'])} to {fmt(s['ratio_max'])}"
             + (" (below 1: the decay is faster than the bound)." if s["ratio_max"] < 1 else ".")]
    if "fit" in s:
        f = s["fit"]
        notes.append(f"Fit C ~ alpha^a beta^b m_in^c over the grid: a = {fmt(f['alpha'])}, b = {fmt(f['beta'])}, "
                     f"c = {fmt(f['m_in'])} (Lemma 2: -2, -1, 1).")
    notes.append("For reference, the population update of MATH 4 restricted to B*_perp shrinks a direction of size s "
                 f"by alpha^2 beta (sigma^2 + tr V) s^3 / m_in, tr V -> tr Sigma* = {fmt(s['trace_sigma'])}: it "
                 f"suggests C ~ m_in / (2 alpha^2 beta (sigma^2 + tr Sigma*)), a ratio of "
                 f"{fmt(s['suggested_ratio'])} to Lemma 2's constant.")
    return notes


def render(d: Design, rows: list[dict], notes: list[str], *, quick: bool, wall: float, machine: str) -> str:
    cfg = validate(d.base)
    body = [[r["alpha"], r["beta"], r["m_in"], fmt(r["late_slope"]), fmt(r["C_measured"]), fmt(r["C_lemma2"]),
             fmt(r["ratio"])] for r in rows]
    lines = page.header("Unlearning rate of B*_perp against alpha, beta, m_in", NAME, quick=quick, wall=wall,
                        machine=machine) + [
        f"Exact infinite-task FO-ANIL, d = {cfg.problem.d}, k = {cfg.problem.k}, k' = {cfg.model.width}, "
        f"sigma = {cfg.problem.noise_std}, init_scale = {cfg.model.init_scale}, T = {d.points[-1]} steps, all grid "
        f"points in batched population runs. Slope: log-log least squares of perp_norm^2 over t in "
        f"[{d.fit_from:g} T, T]; C = perp_norm^2(T) T.", "",
        markdown_table(["alpha", "beta", "m_in", "late slope", "C measured", "C Lemma 2", "ratio"], body)]
    return "\n".join(lines + page.findings_block(notes))


def draw(d: Design, rows: list[dict], runs: list[dict], summary: dict, out: Path, *, quick: bool = False) -> None:
    from matplotlib.figure import Figure

    from metarep.plots import setting_title

    fig = Figure(figsize=(12, 5.0), layout="constrained")
    c = validate(d.base)
    fig.suptitle(setting_title("Exact infinite-task FO-ANIL", f"d = {c.problem.d}, k = {c.problem.k}, k' = "
                               f"{c.model.width}, sigma = {c.problem.noise_std:g}, T = {d.points[-1]} steps", quick))
    ax, ax2 = fig.subplots(1, 2)
    _draw_curves(ax, d, runs, validate(d.base).problem.noise_std)
    ok = [r for r in rows if r["status"] == "completed" and np.isfinite(r["C_measured"])]
    for i, m in enumerate(sorted({r["m_in"] for r in ok})):
        sel = [r for r in ok if r["m_in"] == m]
        ax2.scatter([r["C_lemma2"] for r in sel], [r["C_measured"] for r in sel], color=f"C{i}", label=f"m_in = {m}")
    if ok:
        lo = min(min(r["C_lemma2"], r["C_measured"]) for r in ok) / 2
        hi = max(max(r["C_lemma2"], r["C_measured"]) for r in ok) * 2
        ax2.plot([lo, hi], [lo, hi], c="gray", ls=":", label="measured = Lemma 2")
        k = summary["suggested_ratio"]
        ax2.plot([lo, hi], [k * lo, k * hi], c="gray", ls="--", lw=1,
                 label=r"$m_{in}/(2\alpha^2\beta(\sigma^2+\mathrm{tr}\,\Sigma_*))$")
    ax2.set(xscale="log", yscale="log", xlabel=r"Lemma 2: $m_{in}/(\alpha^2\beta\sigma^2)$",
            ylabel=r"measured $\|P_\perp B_T\|_2^2\,T$", title="constant of the 1/t decay")
    ax2.legend(fontsize=8)
    page.save_png(fig, out, NAME)


def _draw_curves(ax, d: Design, runs: list[dict], sigma: float) -> None:
    """perp_norm^2 against t at the shown (alpha, beta), one curve per m_in, with Lemma 2's asymptote."""
    a0, b0 = d.show
    shown = [(g, r) for g, r in zip(d.grid, runs) if g[0] == a0 and g[1] == b0 and r["status"] == "completed"]
    for i, ((a, b, m), r) in enumerate(shown):
        st = np.array([x["step"] for x in r["history"]], dtype=float)
        x2 = np.array([x["perp_norm"] ** 2 for x in r["history"]])
        keep = st > 0
        ax.plot(st[keep], x2[keep], color=f"C{i}", label=f"m_in = {m}")
        asym = lemma2_asymptote(st, a, b, sigma, m)
        keep = keep & (asym <= 3 * x2[0])
        ax.plot(st[keep], asym[keep], ls="--", lw=1, color=f"C{i}")
    ax.set(xscale="log", yscale="log", xlabel="outer step t", ylabel=r"$\|P_\perp B_t\|_2^2$",
           title=rf"$\alpha={a0:g}$, $\beta={b0:g}$ (dashed: Lemma 2, $m_{{in}}/(\alpha^2\beta\sigma^2 t)$)")
    ax.legend(fontsize=8)


def run(out: Path, *, quick: bool = False, workers: int = 2, experiments=None,
        echo: Callable[[str], None] = print) -> dict:
    start = time.perf_counter()
    machine = machine_line(workers)
    d = design(*load_study(NAME, quick=quick, experiments=experiments))
    jobs, costs = plan(d, workers)
    echo(f"{NAME}: {len(d.grid)} (alpha, beta, m_in) points, {d.points[-1]} exact population steps, in "
         f"{len(jobs)} batch(es)")
    results = parallel_map(population_job, jobs, workers=workers, costs=costs, on_done=page.echo_done(echo, jobs, NAME))
    rows, runs = aggregate(d, results)
    summary = summarize(d, rows)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / f"{NAME}.csv", rows, list(rows[0]))
    draw(d, rows, runs, summary, out, quick=quick)
    return page.publish(out, NAME, rows=rows, summary=summary, start=start, echo=echo,
                        render=lambda wall: render(d, rows, findings(summary), quick=quick, wall=wall, machine=machine))
