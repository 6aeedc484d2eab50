"""Study `tasks`: FO-ANIL with N training tasks against infinitely many, trained to the horizon
where perp_norm has settled (the paper's first open question: does FO-ANIL still unlearn
B*_perp with finitely many tasks?).

Settings: experiments/studies/tasks.toml ([study]: the values of N, each one's horizon, seeds,
measurement points, the settle and departure tolerances, the reference rows). Every N trains
full-batch FO-ANIL from the same B_0 as the infinite-task run (exact population dynamics) of the
same seed, so the two curves are compared step by step. Writes tasks.md, tasks.csv (one line
per N, infinite tasks and each reference), tasks_curves.csv (the tracked norms at log-spaced
steps, every run), tasks_summary.json and tasks.png. Each run's result is kept in
tasks_jobs/ as it finishes, so an interrupted study resumes where it stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    with_seed,
    write_csv,
)
from metarep.reproduce.jobs import METRICS, population_job, run_config_job, trace_job
from metarep.reproduce.studies import page
from metarep.reproduce.studies.tasks_plot import draw
from metarep.running.pool import finished, resumable_map

NAME = "tasks"
COLUMNS = ("N", "steps", "seeds", "completed", "perp_final_mean", "perp_final_std", "settle_change_max", "settled",
           "trend", "perp_min_mean", "t_min_median", "t_depart_median", "inf_perp_at_T", "perp_over_inf",
           "excess_risk_mean", "excess_risk_std", "inf_excess_risk_at_T", "align_final_mean", "lambda_rel_err_mean")
CURVE_COLUMNS = ("N", "seed", "step", *METRICS)


@dataclass(frozen=True)
class Design:
    data: dict                   # config data shared by every run
    tasks: list[int]             # the values of N
    steps: dict[int, int]        # N -> horizon (outer steps)
    seeds: list[int]
    points: int                  # log-spaced measurement points up to the longest horizon
    settle_tol: float            # settled: |perp(T) - perp(T/2)| < settle_tol perp(T) on every seed
    depart_tol: float            # departed: perp_N(t) > (1 + depart_tol) perp_inf(t)
    references: list[dict]       # rows trained without the N axis (e.g. the oracle), config overrides

    @property
    def horizon(self) -> int:
        return max(self.steps.values())

    def grid(self, T: int) -> list[int]:
        """The measured steps of a run of T steps: the shared log-spaced grid, T/2 and T."""
        return sorted({p for p in self.all_points() if p <= T} | {T // 2, T})

    def all_points(self) -> list[int]:
        pts = set(log_points(self.horizon, self.points))
        for T in self.steps.values():
            pts |= {T // 2, T}
        return sorted(pts)

    def config(self, tasks, steps: int, seed: int, over: dict | None = None) -> dict:
        return with_seed(deep_merge(self.data, deep_merge({"train": {"tasks": tasks, "steps": steps}}, over or {})),
                         seed)


def design(data: dict, study: dict) -> Design:
    tasks = [int(n) for n in study["tasks"]]
    steps = study["steps"]
    steps = [int(s) for s in steps] if isinstance(steps, list) else [int(steps)] * len(tasks)
    if len(steps) != len(tasks):
        raise ValueError("tasks.toml: [study] steps must be one number or one per value of N")
    return Design(data, tasks, dict(zip(tasks, steps)), list(range(int(study.get("seeds", 3)))),
                  int(study.get("points", 60)), float(study.get("settle_tol", 0.01)),
                  float(study.get("depart_tol", 0.05)), list(study.get("references", [])))


# ----------------------------------------------------------------------------------------
# plan and run
# ----------------------------------------------------------------------------------------

def plan(d: Design) -> tuple[list[dict], list[float]]:
    """One traced run per (N, seed); infinite tasks as one batched population run over seeds per
    distinct horizon (the longest one traced on every point); each reference row per seed.
    Costs are rough seconds (a finite step costs ~0.4 us per task at d = 20)."""
    jobs, costs = [], []
    for n in d.tasks:
        T = d.steps[n]
        for s in d.seeds:
            jobs.append({"kind": "trace", "N": n, "seed": s, "config": d.config(n, T, s), "points": d.grid(T),
                         "tag": f"N={n} seed {s}"})
            costs.append(4e-7 * n * T + 2e-5 * T)
    for T in sorted(set(d.steps.values())):
        points = d.all_points() if d.horizon == T else d.grid(T)
        jobs.append({"kind": "population", "N": "inf", "steps": T, "configs": [d.config("inf", T, s) for s in d.seeds],
                     "points": points, "tag": f"infinite tasks, {T} steps"})
        costs.append(1e-4 * T)
    for ref in d.references:
        over = {k: v for k, v in ref.items() if k not in ("key", "label")}
        for s in d.seeds:
            jobs.append({"kind": "run", "N": ref["key"], "seed": s, "config": with_seed(deep_merge(d.data, over), s),
                         "tag": f"{ref['key']} seed {s}"})
            costs.append(0.0)
    return jobs, costs


def work(job: dict):
    """The worker side of `plan`'s jobs."""
    if job["kind"] == "trace":
        return trace_job(job)
    if job["kind"] == "population":
        return population_job(job)
    return run_config_job(job)


# ----------------------------------------------------------------------------------------
# aggregate
# ----------------------------------------------------------------------------------------

def _at(history: list[dict], step: int, key: str = "perp_norm") -> float:
    return next(r[key] for r in history if r["step"] == step)


def _seed_numbers(history: list[dict], inf_history: list[dict] | None, T: int, depart_tol: float) -> dict:
    """What one finite-task curve says: its value at T, its change over [T/2, T], its minimum,
    and the first step at which it rises above the infinite-task curve of the same seed."""
    steps = np.array([r["step"] for r in history])
    perp = np.array([r["perp_norm"] for r in history])
    final, half = _at(history, T), _at(history, T // 2)
    late = steps > 0
    i_min = int(np.argmin(np.where(late, perp, np.inf)))
    depart = None
    if inf_history is not None:
        ref = {r["step"]: r["perp_norm"] for r in inf_history}
        depart = next((int(t) for t, p in zip(steps, perp) if t > 0 and t in ref and p > (1 + depart_tol) * ref[t]),
                      None)
    return {"final": final, "change": abs(final - half) / final, "rising": final > half,
            "min": float(perp[i_min]), "t_min": int(steps[i_min]), "depart": depart}


def _median(values) -> float | None:
    v = [x for x in values if x is not None]
    return float(np.median(v)) if v else None


def _runs(jobs: list[dict], results: list, kind: str, key) -> list[tuple[int, Any]]:
    return [(job.get("seed", 0), res) for job, res in zip(jobs, results) if job["kind"] == kind and job["N"] == key]


def aggregate(d: Design, jobs: list[dict], results: list) -> tuple[list[dict], list[dict], dict]:
    """(rows of tasks.csv, rows of tasks_curves.csv, per-seed final perp_norm by N)."""
    inf_runs: dict[int, list[dict]] = {job["steps"]: res for job, res in zip(jobs, results)
                                       if job["kind"] == "population"}
    longest = inf_runs[d.horizon]
    inf_curves = {s: r.get("history") for s, r in zip(d.seeds, longest)}
    curves = [{"N": "inf", "seed": s, **h} for s, r in zip(d.seeds, longest) for h in r.get("history", [])]
    rows, per_seed = [], {}
    for n in d.tasks:
        T, mine = d.steps[n], _runs(jobs, results, "trace", n)
        curves += [{"N": n, "seed": s, **h} for s, r in mine for h in r["history"]]
        done = [(s, r) for s, r in mine if r["status"] == "completed"]
        nums = [_seed_numbers(r["history"], inf_curves.get(s), T, d.depart_tol) for s, r in done]
        per_seed[n] = [x["final"] for x in nums]
        inf_T = [_at(r["history"], T) for r in longest if r["status"] == "completed"]
        rows.append(_row(n, T, len(mine), done, nums, inf_T, inf_runs[T], d.settle_tol))
    rows.append(_inf_row(d.horizon, longest))
    for ref in d.references:
        ref_done = [r for _, r in _runs(jobs, results, "run", ref["key"]) if r["status"] == "completed"]
        risk = mean_std([r["excess_risk"] for r in ref_done])
        rows.append({"N": ref["key"], "label": ref.get("label", ref["key"]), "steps": 0, "seeds": len(d.seeds),
                     "completed": len(ref_done), "excess_risk_mean": risk[0], "excess_risk_std": risk[1]})
    return rows, curves, per_seed


def _row(n, T, seeds, done, nums, inf_T, inf_at_T, settle_tol) -> dict:
    finals = mean_std([x["final"] for x in nums])
    risk = mean_std([r["excess_risk"] for _, r in done])
    changes = [x["change"] for x in nums]
    inf_perp = mean_std(inf_T)[0]
    rising = sum(x["rising"] for x in nums)
    return {"N": n, "steps": T, "seeds": seeds, "completed": len(done),
            "perp_final_mean": finals[0], "perp_final_std": finals[1],
            "settle_change_max": max(changes) if changes else None,
            "settled": bool(changes) and len(done) == seeds and max(changes) < settle_tol,
            "trend": "rising" if rising == len(nums) else "falling" if rising == 0 else "mixed",
            "perp_min_mean": mean_std([x["min"] for x in nums])[0], "t_min_median": _median([x["t_min"] for x in nums]),
            "t_depart_median": _median([x["depart"] for x in nums]), "inf_perp_at_T": inf_perp,
            "perp_over_inf": finals[0] / inf_perp if inf_perp else None,
            "excess_risk_mean": risk[0], "excess_risk_std": risk[1],
            "inf_excess_risk_at_T": mean_std([r["excess_risk"] for r in inf_at_T if r["status"] == "completed"])[0],
            "align_final_mean": mean_std([_at(r["history"], T, "align_norm") for _, r in done])[0],
            "lambda_rel_err_mean": mean_std([_at(r["history"], T, "lambda_rel_err") for _, r in done])[0]}


def _inf_row(T: int, runs: list[dict]) -> dict:
    done = [r for r in runs if r["status"] == "completed"]
    perp, risk = mean_std([r["perp_norm"] for r in done]), mean_std([r["excess_risk"] for r in done])
    return {"N": "inf", "steps": T, "seeds": len(runs), "completed": len(done), "perp_final_mean": perp[0],
            "perp_final_std": perp[1], "settled": False, "trend": "falling", "inf_perp_at_T": perp[0],
            "perp_over_inf": 1.0, "excess_risk_mean": risk[0], "excess_risk_std": risk[1],
            "inf_excess_risk_at_T": risk[0], "align_final_mean": mean_std([r["align_norm"] for r in done])[0],
            "lambda_rel_err_mean": mean_std([r["lambda_rel_err"] for r in done])[0]}


def fit_plateau(rows: list[dict], per_seed: dict) -> dict:
    """Least squares of log perp_norm(T) on log N over every seed of the settled N:
    perp ~ c N^b, with standard errors of b and log c from the residuals."""
    settled = [r["N"] for r in rows if isinstance(r["N"], int) and r.get("settled")]
    x = np.log([n for n in settled for _ in per_seed[n]])
    y = np.log([v for n in settled for v in per_seed[n]])
    if len(settled) < 2 or x.size < 3:
        return {"settled_N": settled, "points": int(x.size), "exponent": None, "exponent_se": None,
                "prefactor": None, "log_prefactor_se": None}
    X = np.column_stack([np.ones_like(x), x])
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    resid = y - X @ coef
    dof = max(1, x.size - 2)
    cov = (resid @ resid / dof) * np.linalg.inv(X.T @ X)
    return {"settled_N": settled, "points": int(x.size), "exponent": float(coef[1]),
            "exponent_se": float(np.sqrt(cov[1, 1])), "prefactor": float(np.exp(coef[0])),
            "log_prefactor_se": float(np.sqrt(cov[0, 0]))}


def summarize(d: Design, rows: list[dict], fit: dict) -> dict:
    """tasks_summary.json: the numbers the findings quote."""
    fin = [r for r in rows if isinstance(r["N"], int)]
    inf = next(r for r in rows if r["N"] == "inf")
    refs = {r["N"]: r["excess_risk_mean"] for r in rows if r["N"] not in {"inf", *d.tasks}}
    return {"horizon": d.horizon, "steps": {str(n): t for n, t in d.steps.items()}, "seeds": len(d.seeds),
            "settle_tol": d.settle_tol, "depart_tol": d.depart_tol, "plateau_fit": fit,
            "settled_N": [r["N"] for r in fin if r["settled"]],
            "unsettled_N": [r["N"] for r in fin if not r["settled"]],
            "all_above_infinite": all(r["perp_over_inf"] is not None and r["perp_over_inf"] > 1 for r in fin),
            "infinite": {"perp_final": inf["perp_final_mean"], "excess_risk": inf["excess_risk_mean"]},
            "references": refs}


# ----------------------------------------------------------------------------------------
# findings and page
# ----------------------------------------------------------------------------------------

def _settled_note(d: Design, settled: list[dict], inf: dict) -> str:
    values = ", ".join(f"{fmt(r['perp_final_mean'])} (N = {r['N']}, {r['steps']} steps)" for r in settled)
    ratios = [r["perp_over_inf"] for r in settled]
    return (f"Settled (perp_norm moves less than {fmt(100 * d.settle_tol, 2)}% over the last doubling of steps, every "
            f"seed): N = {', '.join(str(r['N']) for r in settled)}, at {values}; that is {fmt(min(ratios))} to "
            f"{fmt(max(ratios))} times the infinite-task value at the same step. perp_norm plateaus above the "
            f"infinite-task curve, which keeps falling (to {fmt(inf['perp_final_mean'])} at step {inf['steps']}).")


def _fit_note(fit: dict) -> str:
    if fit["exponent"] is None:
        return "Fewer than two values of N settled within their horizons: no plateau is fitted."
    return (f"Fitted plateau: perp_norm(T) = {fmt(fit['prefactor'])} N^({fmt(fit['exponent'])} +- "
            f"{fmt(fit['exponent_se'], 2)}) (least squares on log-log over {fit['points']} settled runs, "
            f"N = {min(fit['settled_N'])}..{max(fit['settled_N'])}; +- one standard error).")


def _unsettled_note(r: dict) -> str:
    return (f"N = {r['N']}: NOT settled at {r['steps']} steps (perp_norm {fmt(r['perp_final_mean'])}, {r['trend']} by "
            f"{fmt(100 * r['settle_change_max'], 2)}% over the last doubling): its plateau is not decided within "
            "this horizon.")


def _depart_note(d: Design, departed: list[dict]) -> str:
    return ("Each finite-N curve follows the infinite-task curve of its seed, then leaves it (first step more than "
            f"{fmt(100 * d.depart_tol, 2)}% above it, median over seeds): "
            + ", ".join(f"step {int(r['t_depart_median'])} (N = {r['N']})" for r in departed)
            + "; its minimum (mean over seeds, median step): "
            + ", ".join(f"{fmt(r['perp_min_mean'])} at {int(r['t_min_median'])}" for r in departed) + ".")


def _risk_note(fin: list[dict], references: dict) -> str:
    refs = "; ".join(f"{k} {fmt(v)}" for k, v in references.items())
    return ("Test excess risk (one gradient step) at each horizon against infinite tasks at the same step: "
            + ", ".join(f"N = {r['N']}: {fmt(r['excess_risk_mean'])} vs {fmt(r['inf_excess_risk_at_T'])}" for r in fin)
            + (f". References: {refs}." if refs else "."))


def findings(d: Design, rows: list[dict], summary: dict) -> list[str]:
    """Sentences computed from the numbers."""
    fin = [r for r in rows if isinstance(r["N"], int) and r["completed"]]
    inf = next(r for r in rows if r["N"] == "inf")
    settled = [r for r in fin if r["settled"]]
    notes = [_settled_note(d, settled, inf)] if settled else []
    notes.append(_fit_note(summary["plateau_fit"]))
    notes += [_unsettled_note(r) for r in fin if not r["settled"]]
    departed = [r for r in fin if r["t_depart_median"] is not None]
    if departed:
        notes.append(_depart_note(d, departed))
    if fin:
        notes.append(_risk_note(fin, summary["references"]))
    notes += [f"N = {r['N']}: {r['seeds'] - r['completed']} of {r['seeds']} seeds did not complete."
              for r in rows if isinstance(r["N"], int) and r["completed"] < r["seeds"]]
    return notes


def render(d: Design, rows: list[dict], notes: list[str], *, quick: bool, wall: float, machine: str) -> str:
    cfg = validate(with_seed(d.data, 0))
    p, t = cfg.problem, cfg.train
    body = [[r["N"], r.get("steps") or "-", f"{r['completed']}/{r['seeds']}",
             f"{fmt(r.get('perp_final_mean'))} +- {fmt(r.get('perp_final_std'), 2)}" if r.get("perp_final_mean")
             is not None else "-", fmt(r.get("settle_change_max")), _yes_no(r),
             fmt(r.get("inf_perp_at_T")), fmt(r.get("t_depart_median")),
             f"{fmt(r['excess_risk_mean'])} +- {fmt(r['excess_risk_std'], 2)}", fmt(r.get("inf_excess_risk_at_T"))]
            for r in rows]
    lines = page.header("FO-ANIL with N training tasks, to the horizon where perp_norm settles", NAME,
                        quick=quick, wall=wall, machine=machine) + [
        f"FO-ANIL, d = {p.d}, k = {p.k}, k' = {cfg.model.width}, sigma = {p.noise_std}, m_in = {t.m_in}, "
        f"m_out = {t.m_out}, alpha = {t.alpha}, beta = {t.beta}; full-batch outer steps on N fixed tasks, from the "
        f"same B_0 as the exact infinite-task run of the same seed; {len(d.seeds)} seeds; perp_norm measured at "
        f"log-spaced steps. Test: one gradient step on m_test = {cfg.test.m_test}, {cfg.test.tasks} new tasks "
        "per seed. `change`: |perp(T) - perp(T/2)| / perp(T), largest over seeds; `settled`: below "
        f"{d.settle_tol:g} on every seed. `departs`: first step at which perp_norm is {100 * d.depart_tol:g}% "
        "above the infinite-task curve (median over seeds).", "",
        markdown_table(["N", "steps T", "seeds", "perp_norm at T", "change", "settled", "inf tasks at T",
                        "departs", "excess risk", "inf tasks risk at T"], body),
        "Curves: `tasks_curves.csv`; fit and headline numbers: `tasks_summary.json`.", ""]
    return "\n".join(lines + page.findings_block(notes))


def _yes_no(row: dict) -> str:
    return "-" if not isinstance(row["N"], int) else "yes" if row["settled"] else "no"


def run(out: Path, *, quick: bool = False, workers: int = 2, experiments=None,
        echo: Callable[[str], None] = print) -> dict:
    start = time.perf_counter()
    machine = machine_line(workers)
    d = design(*load_study(NAME, quick=quick, experiments=experiments))
    jobs, costs = plan(d)
    echo(f"{NAME}: N in {d.tasks} x {len(d.seeds)} seeds (horizons {sorted(set(d.steps.values()))}), infinite "
         f"tasks and {len(d.references)} reference row(s): {len(jobs)} jobs on {workers} worker(s)")
    out = Path(out)
    kept = out / f"{NAME}_jobs"
    # cheapest first: a study stopped part-way keeps every value of N up to where it stopped
    results = resumable_map(work, jobs, workers=workers, costs=[-c for c in costs], folder=kept,
                            on_done=page.echo_done(echo, jobs, NAME))
    rows, curves, per_seed = aggregate(d, jobs, results)
    fit = fit_plateau(rows, per_seed)
    summary = summarize(d, rows, fit)
    write_csv(out / f"{NAME}.csv", rows, COLUMNS)
    write_csv(out / f"{NAME}_curves.csv", curves, CURVE_COLUMNS)
    draw(d, rows, curves, fit, out, quick=quick)
    notes = findings(d, rows, summary)
    result = page.publish(out, NAME, rows=rows, summary=summary, start=start, echo=echo,
                          render=lambda wall: render(d, rows, notes, quick=quick, wall=wall, machine=machine))
    finished(kept)
    return result
