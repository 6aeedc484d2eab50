"""Study `heads`: the theory assumes mu* = 0 and Sigma* = c I. With a non-zero head mean and a
non-diagonal covariance, do Lambda_t -> Lambda*, B_t w_t -> B* mu* and the unlearning of B*_perp
still hold?

Settings: experiments/studies/heads.toml ([study]: the task distributions, seeds, points).
Exact infinite-task FO-ANIL (MATH 4 holds for any mu*, Sigma*), all seeds of a distribution in
one batched run. Writes heads.md, heads.csv, heads_summary.json and heads.png.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from metarep.config.schema import validate
from metarep.reproduce.common import (
    deep_merge,
    fmt,
    load_study,
    log_points,
    machine_line,
    markdown_table,
    mean_std,
    parallel_map,
    population_batch,
    with_seed,
    write_csv,
)
from metarep.reproduce.figure1 import late_slope
from metarep.reproduce.jobs import curve, final_numbers
from metarep.reproduce.studies import page

NAME = "heads"
LAMBDA_TOL = 0.05          # "Lambda_t -> Lambda*" holds when the final relative error is below this
MONOTONE_FROM = 100        # perp_norm is checked to be non-increasing from this step on


@dataclass(frozen=True)
class Design:
    data: dict
    seeds: list[int]
    variants: list[dict]         # key, label and [problem] overrides of each task distribution
    points: list[int]


def design(data: dict, study: dict) -> Design:
    steps = validate(with_seed(data, 0)).train.steps
    return Design(data, list(range(int(study.get("seeds", 3)))), list(study["variants"]),
                  log_points(steps, int(study.get("points", 80))))


def plan(d: Design) -> tuple[list[dict], list[float]]:
    jobs = [{"configs": [with_seed(deep_merge(d.data, {"problem": v.get("problem", {})}), s) for s in d.seeds],
             "points": d.points, "tag": v["key"]} for v in d.variants]
    return jobs, [1.0] * len(jobs)


def work(job: dict) -> list[dict]:
    """A batched population run; per seed its final numbers, its curve, and Lambda_t's error to
    Lambda* computed with M* = Sigma* + mu* mu*^T in Sigma*'s place."""
    from metarep.linear.metrics import lambda_rel_err
    from metarep.linear.theory import lambda_star

    configs = [validate(c) for c in job["configs"]]
    out = []
    for exp, state, s in population_batch(configs, points=job["points"]):
        t = exp.config.train
        lam_m = lambda_star(exp.problem.M_star, exp.problem.noise_std, t.alpha,
                            float("inf") if t.m_in == "inf" else t.m_in)
        out.append({"status": s["status"], **final_numbers(s), "history": curve(state.history),
                    "lambda_rel_err_mstar": float(lambda_rel_err(state.params.B, exp.problem.B_star, lam_m))})
    return out


def _non_increasing(history: list[dict]) -> bool:
    late = [x["perp_norm"] for x in history if x["step"] >= MONOTONE_FROM]
    return all(b <= a * (1 + 1e-9) for a, b in zip(late, late[1:]))


def aggregate(d: Design, results: list[list[dict]]) -> tuple[list[dict], dict]:
    """(rows of heads.csv, the seed-0 curve of each variant)."""
    rows, curves = [], {}
    for v, runs in zip(d.variants, results):
        done = [r for r in runs if r["status"] == "completed"]
        curves[v["key"]] = done[0]["history"] if done else []
        slopes = [late_slope([x["step"] for x in r["history"]], [x["perp_norm"] ** 2 for x in r["history"]])
                  for r in done]
        risk = mean_std([r["excess_risk"] for r in done])
        rows.append({"variant": v["key"], "label": v.get("label", v["key"]), "seeds": len(runs),
                     "completed": len(done),
                     "lambda_rel_err": mean_std([r["lambda_rel_err"] for r in done])[0],
                     "lambda_rel_err_mstar": mean_std([r["lambda_rel_err_mstar"] for r in done])[0],
                     "mean_norm_initial": mean_std([r["history"][0]["mean_norm"] for r in done])[0],
                     "mean_norm_final": mean_std([r["mean_norm"] for r in done])[0],
                     "perp_norm_initial": mean_std([r["history"][0]["perp_norm"] for r in done])[0],
                     "perp_norm_final": mean_std([r["perp_norm"] for r in done])[0],
                     "perp_sq_late_slope": mean_std(slopes)[0],
                     "perp_decreasing_after_100": all(_non_increasing(r["history"]) for r in done),
                     "excess_risk_mean": risk[0], "excess_risk_std": risk[1]})
    return rows, curves


def summarize(d: Design, rows: list[dict]) -> dict:
    return {"seeds": len(d.seeds), "steps": d.points[-1], "lambda_tol": LAMBDA_TOL,
            "variants": {r["variant"]: {k: v for k, v in r.items() if k != "variant"} for r in rows}}


def findings(rows: list[dict]) -> list[str]:
    notes = []
    for r in rows:
        lam_ok = "holds" if r["lambda_rel_err"] < LAMBDA_TOL else "does not hold"
        notes.append(
            f"{r['label']}: Lambda_t -> Lambda*(Sigma*) {lam_ok} (relative error {fmt(r['lambda_rel_err'])}; with "
            f"M* = Sigma* + mu* mu*^T in its place {fmt(r['lambda_rel_err_mstar'])}); mean_norm "
            f"{fmt(r['mean_norm_initial'])} -> {fmt(r['mean_norm_final'])}; perp_norm {fmt(r['perp_norm_initial'])} "
            f"-> {fmt(r['perp_norm_final'])}, {'non-increasing' if r['perp_decreasing_after_100'] else 'NOT monotone'}"
            f" after step {MONOTONE_FROM}, late slope of perp_norm^2 {fmt(r['perp_sq_late_slope'])}.")
    return notes


def render(d: Design, rows: list[dict], notes: list[str], *, quick: bool, wall: float, machine: str) -> str:
    cfg = validate(with_seed(d.data, 0))
    body = [[r["label"], fmt(r["lambda_rel_err"]), fmt(r["lambda_rel_err_mstar"]),
             f"{fmt(r['mean_norm_initial'])} -> {fmt(r['mean_norm_final'])}",
             f"{fmt(r['perp_norm_initial'])} -> {fmt(r['perp_norm_final'])}", fmt(r["perp_sq_late_slope"]),
             f"{fmt(r['excess_risk_mean'])} +- {fmt(r['excess_risk_std'], 2)}"] for r in rows]
    lines = page.header("Beyond the theory's assumptions: non-zero mu*, non-diagonal Sigma*", NAME, quick=quick,
                        wall=wall, machine=machine) + [
        f"Exact infinite-task FO-ANIL (MATH 4, which holds for any mu*, Sigma*), d = {cfg.problem.d}, "
        f"k' = {cfg.model.width}, m_in = {cfg.train.m_in}, {d.points[-1]} steps, {len(d.seeds)} seeds. Lambda* is "
        "MATH 5's formula, derived for mu* = 0; the second column puts M* = Sigma* + mu* mu*^T in Sigma*'s place.", "",
        markdown_table(["task distribution", "Lambda rel. err (Sigma*)", "Lambda rel. err (M*)", "mean_norm",
                        "perp_norm", "late slope perp^2", "excess risk"], body)]
    return "\n".join(lines + page.findings_block(notes))


def draw(curves: dict, labels: dict, out: Path, *, setting: str = "", quick: bool = False) -> None:
    from matplotlib.figure import Figure

    from metarep.plots import curve_style, log_values, setting_title

    fig = Figure(figsize=(15, 5.2), layout="constrained")
    axes = fig.subplots(1, 3)
    zeros: list[list[str]] = [[], [], []]
    for i, (key, hist) in enumerate(curves.items()):
        steps = np.array([r["step"] for r in hist], dtype=float)
        for j, (ax, metric) in enumerate(zip(axes, ("lambda_rel_err", "perp_norm", "mean_norm"))):
            ys = np.array([r[metric] for r in hist])
            keep = (steps > 0) & (ys > 0)
            if not keep.any():
                zeros[j].append(labels[key])
                continue
            ax.plot(steps[keep], ys[keep], **curve_style(i), label=labels[key])
    titles = (r"$\|\Lambda_t-\Lambda_*\|/\|\Lambda_*\|$", r"$\|P_\perp B_t\|_2$", r"$\|B_t w_t - B_*\mu_*\|_2$")
    for ax, title, zero in zip(axes, titles, zeros):
        ax.set(xscale="log", xlabel="\n".join(["outer step t", *(["identically 0 (not drawn):", *zero] if zero
                                                                     else [])]), title=title)
        log_values(ax)
    handles = {line.get_label(): line for ax in axes for line in ax.get_lines()}
    fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncol=4, fontsize=8)
    fig.suptitle(setting_title("Exact infinite-task FO-ANIL, seed 0", setting, quick))
    page.save_png(fig, out, NAME)


def run(out: Path, *, quick: bool = False, workers: int = 2, experiments=None,
        echo: Callable[[str], None] = print) -> dict:
    start = time.perf_counter()
    machine = machine_line(workers)
    d = design(*load_study(NAME, quick=quick, experiments=experiments))
    jobs, costs = plan(d)
    echo(f"{NAME}: {len(d.variants)} task distributions x {len(d.seeds)} seeds (exact population dynamics)")
    results = parallel_map(work, jobs, workers=workers, costs=costs, on_done=page.echo_done(echo, jobs, NAME))
    rows, curves = aggregate(d, results)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / f"{NAME}.csv", rows, list(rows[0]))
    from metarep.plots import config_setting

    draw(curves, {v["key"]: v.get("label", v["key"]) for v in d.variants}, out,
         setting=config_setting(with_seed(d.data, 0), "m_in"), quick=quick)
    return page.publish(out, NAME, rows=rows, summary=summarize(d, rows), start=start, echo=echo,
                        render=lambda wall: render(d, rows, findings(rows), quick=quick, wall=wall, machine=machine))
