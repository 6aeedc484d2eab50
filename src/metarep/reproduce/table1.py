"""Table 1 of the paper (its section 5) in the setting of MATH.md section 7.

Rows are experiments/table1/NN_<row>.toml on top of experiments/table1/base.toml. Every row
runs S seeds; seed s fixes B* (problem.seed = s), the initialisation and training tasks
(train.seed = s) and the test tasks (test.seed = 1000 + s), so rows are compared pairwise.
Exact infinite-task FO-ANIL rows advance all their seeds in one batched population run; every
other (row, seed) is one runner.run, spread over worker processes.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tomli_w

from metarep.config import ConfigError, validate
from metarep.methods import get_method
from metarep.metrics import numerical_rank
from metarep.reproduce.common import (
    adapt_description,
    batchable,
    compose,
    experiments_dir,
    fmt,
    machine_line,
    markdown_table,
    mean_std,
    parallel_map,
    population_batch,
    with_seed,
    write_csv,
    write_text,
)
from metarep.store import atomic_write

COARSE_TOL = 0.1         # a second, coarser rank threshold: 1/t unlearning makes the 1e-2 one slow to reach
PAPER = {"fo_anil_inf_tasks": "0.77 +- 0.01", "fo_anil_inf_samples": "1.78 +- 0.02"}
ROW_FILE = re.compile(r"^(\d+)_(\w+)\.toml$")
CSV_COLUMNS = ("row", "label", "method", "training", "tasks", "m_in", "m_out", "steps", "width", "test_adapt",
               "seeds", "completed", "excess_risk_mean", "excess_risk_std", "excess_risk_se_mean",
               "perp_norm_mean", "perp_norm_std", "align_norm_mean", "mean_norm_mean", "lambda_rel_err_mean",
               "rank_min", "rank_max", "rank_rel_tol", "rank_10_min", "rank_10_max", "cpu_s")
SEED_COLUMNS = ("row", "seed", "status", "excess_risk", "excess_risk_se", "perp_norm", "align_norm", "mean_norm",
                "lambda_rel_err", "rank", "rank_10", "steps", "cpu_s", "message")


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    training: str
    note: str
    data: dict          # config data without seeds


def load_rows(*, quick: bool, experiments=None, only: tuple[str, ...] = ()) -> list[Row]:
    """The rows of experiments/table1, in file order; each validated once (seed 0)."""
    folder = experiments_dir(experiments) / "table1"
    base = folder / "base.toml"
    if not base.exists():
        raise ConfigError(f"{str(base)!r} not found")
    files = sorted((p for p in folder.glob("*.toml") if ROW_FILE.match(p.name)), key=lambda p: p.name)
    rows = []
    for path in files:
        key = ROW_FILE.match(path.name).group(2)
        if only and key not in only:
            continue
        data, meta = compose([base, path], quick=quick)
        info = meta.get("row", {})
        try:
            validate(with_seed(data, 0))
        except ConfigError as err:
            raise ConfigError(f"{path.name}: {err}") from None
        rows.append(Row(key, info.get("label", key), info.get("training", ""), info.get("note", ""), data))
    if only and {r.key for r in rows} != set(only):
        missing = sorted(set(only) - {r.key for r in rows})
        raise ConfigError(f"unknown table1 row(s) {', '.join(missing)}; known: "
                          f"{', '.join(ROW_FILE.match(p.name).group(2) for p in files)}")
    return rows


def _result(row: str, seed: int, summ: dict, cpu_s: float) -> dict:
    final, test = summ["final"], summ["test"] or {}
    return {"row": row, "seed": seed, "status": summ["status"], "excess_risk": test.get("excess_risk"),
            "excess_risk_se": test.get("excess_risk_se"), "perp_norm": final["perp_norm"],
            "align_norm": final["align_norm"], "mean_norm": final["mean_norm"],
            "lambda_rel_err": final["lambda_rel_err"], "rank": final["rank"], "rank_rel_tol": final["rank_rel_tol"],
            "rank_10": int(numerical_rank(np.asarray(final["singular_values"]), COARSE_TOL)),
            "steps": summ["steps"], "cpu_s": cpu_s, "message": summ["message"]}


def run_job(job: dict) -> list[dict]:
    """One unit of work: a batched population run over seeds, or one runner.run."""
    start = time.perf_counter()
    configs = [validate(c) for c in job["configs"]]
    if job["batch"]:
        runs = population_batch(configs)
        cpu = (time.perf_counter() - start) / len(runs)
        return [_result(job["row"], s, summ, cpu) for s, (_, _, summ) in zip(job["seeds"], runs)]
    from metarep.runner import run

    _, _, summ = run(configs[0])
    return [_result(job["row"], job["seeds"][0], summ, time.perf_counter() - start)]


_METHOD_COST = {"fo-anil": 1.0, "anil": 2.3, "fo-maml": 2.8, "maml": 3.5, "burer-monteiro": 1.3}


def _cost(config) -> float:
    """A rough relative cost (for scheduling the longest jobs first)."""
    t, d = config.train, config.problem.d
    if config.train.method in ("oracle", "none", "moments"):
        return 1e6
    if t.tasks == "inf":
        return 0.5 * t.steps * d * config.model.width ** 2
    n = t.batch_tasks if t.tasks == "online" else t.tasks
    return _METHOD_COST.get(t.method, 2.0) * t.steps * n * (t.m_in + t.m_out) * d


def plan(rows: list[Row], seeds: list[int]) -> tuple[list[dict], list[float]]:
    jobs, costs = [], []
    for row in rows:
        configs = [with_seed(row.data, s) for s in seeds]
        first = validate(configs[0])
        if batchable(first):
            jobs.append({"row": row.key, "seeds": seeds, "configs": configs, "batch": True})
            costs.append(_cost(first) * len(seeds))
        else:
            for s, c in zip(seeds, configs):
                jobs.append({"row": row.key, "seeds": [s], "configs": [c], "batch": False})
                costs.append(_cost(first))
    return jobs, costs


def training_text(config) -> str:
    t = config.train
    if t.method in ("oracle", "none"):
        return "none"
    if t.tasks == "inf":
        return "inf tasks, inf samples" if t.m_in == "inf" else f"inf tasks (exact), m_in {t.m_in}"
    if t.tasks == "online":
        return f"online, {t.batch_tasks} fresh tasks/step"
    return f"N = {t.tasks}, m_in {t.m_in} + m_out {t.m_out}"


def aggregate(rows: list[Row], results: list[dict]) -> list[dict]:
    table = []
    for row in rows:
        cfg = validate(with_seed(row.data, 0))
        mine = [r for r in results if r["row"] == row.key]
        done = [r for r in mine if r["status"] == "completed"]
        risk, risk_std = mean_std([r["excess_risk"] for r in done])
        perp, perp_std = mean_std([r["perp_norm"] for r in done])
        ranks = [r["rank"] for r in done]
        ranks10 = [r["rank_10"] for r in done]
        t = cfg.train
        table.append({
            "row": row.key, "label": row.label, "method": t.method, "training": row.training or training_text(cfg),
            "tasks": t.tasks, "m_in": t.m_in, "m_out": t.m_out,
            "steps": t.steps if get_method(t.method).iterative else 0,
            "width": {"oracle": cfg.problem.k, "none": cfg.problem.d}.get(t.method, cfg.model.width),
            "test_adapt": adapt_description(cfg),
            "seeds": len(mine), "completed": len(done), "excess_risk_mean": risk, "excess_risk_std": risk_std,
            "excess_risk_se_mean": mean_std([r["excess_risk_se"] for r in done])[0],
            "perp_norm_mean": perp, "perp_norm_std": perp_std,
            "align_norm_mean": mean_std([r["align_norm"] for r in done])[0],
            "mean_norm_mean": mean_std([r["mean_norm"] for r in done])[0],
            "lambda_rel_err_mean": mean_std([r["lambda_rel_err"] for r in done])[0],
            "rank_min": min(ranks) if ranks else None, "rank_max": max(ranks) if ranks else None,
            "rank_rel_tol": done[0]["rank_rel_tol"] if done else None,
            "rank_10_min": min(ranks10) if ranks10 else None, "rank_10_max": max(ranks10) if ranks10 else None,
            "cpu_s": float(sum(r["cpu_s"] for r in mine)), "note": row.note,
            "messages": sorted({r["message"] for r in mine if r["status"] != "completed"}),
        })
    return table


def paired(results: list[dict], a: str, b: str) -> tuple[float, float, int] | None:
    """Mean and standard deviation over seeds of risk(a) - risk(b), on the seeds both completed."""
    ra = {r["seed"]: r["excess_risk"] for r in results if r["row"] == a and r["status"] == "completed"}
    rb = {r["seed"]: r["excess_risk"] for r in results if r["row"] == b and r["status"] == "completed"}
    common = sorted(set(ra) & set(rb))
    if not common:
        return None
    diff = [ra[s] - rb[s] for s in common]
    mean, std = mean_std(diff)
    return mean, std, len(common)


def findings(table: list[dict], results: list[dict]) -> list[str]:
    """Sentences computed from the numbers (nothing here is assumed)."""
    by = {r["row"]: r for r in table}
    out = []

    def cmp(a, b, what):
        if a not in by or b not in by:
            return
        p = paired(results, a, b)
        if p is None:
            return
        mean, std, n = p
        ra, rb = by[a]["excess_risk_mean"], by[b]["excess_risk_mean"]
        if n > 1 and np.isfinite(std) and std > 0:
            sig = abs(mean) / (std / np.sqrt(n))
            strength = "consistently" if sig > 3 else "but not consistently across seeds" if sig < 2 else "mostly"
        else:
            strength = "(one seed)"
        verb = "lower" if mean < 0 else "higher"
        sa, sb = by[a]["steps"], by[b]["steps"]
        steps = f", after {sa} vs {sb} training steps" if sa and sb and sa != sb else ""
        out.append(f"{what}: {by[a]['label']} has {verb} test excess risk than {by[b]['label']} "
                   f"({fmt(ra)} vs {fmt(rb)}; paired difference {fmt(mean)} +- {fmt(std)} over {n} seeds, "
                   f"{strength}{steps}).")

    cmp("fo_anil_inf_tasks", "fo_anil_inf_samples", "Infinite tasks vs infinite samples (the paper: 0.77 vs 1.78)")
    cmp("fo_anil", "burer_monteiro", "FO-ANIL vs Burer-Monteiro at k' = d (the paper: FO-ANIL lower)")
    cmp("fo_anil", "fo_anil_inf_tasks", "Finite vs infinite tasks")
    if "fo_anil_inf_tasks" in by and "fo_anil_inf_samples" in by:
        a, b = by["fo_anil_inf_tasks"], by["fo_anil_inf_samples"]
        out.append(f"Unlearning: final perp_norm {fmt(a['perp_norm_mean'])} with m_in = {a['m_in']} against "
                   f"{fmt(b['perp_norm_mean'])} with m_in = inf (rank of B at tolerance {a['rank_rel_tol']}: "
                   f"{_span(a['rank_min'], a['rank_max'])} vs {_span(b['rank_min'], b['rank_max'])}; at "
                   f"{COARSE_TOL}: {_span(a['rank_10_min'], a['rank_10_max'])} vs "
                   f"{_span(b['rank_10_min'], b['rank_10_max'])}).")
    if "oracle" in by:
        done = [r for r in table if r["completed"]]
        best = min(done, key=lambda r: r["excess_risk_mean"])
        o = by["oracle"]
        if best["row"] == "oracle":
            out.append(f"The oracle (known B*, Bayes head) has the lowest risk, {fmt(o['excess_risk_mean'])}.")
        else:
            out.append(f"Lowest mean risk: {best['label']} ({fmt(best['excess_risk_mean'])}), below the oracle's "
                       f"{fmt(o['excess_risk_mean'])}: check the settings.")
    bad = [r for r in table if r["completed"] < r["seeds"]]
    for r in bad:
        out.append(f"{r['label']}: {r['seeds'] - r['completed']} of {r['seeds']} seeds did not complete "
                   f"({'; '.join(r['messages'])}).")
    return out


def _span(lo, hi) -> str:
    return "-" if lo is None else str(lo) if lo == hi else f"{lo}-{hi}"


def render_markdown(table, results, *, base: dict, seeds, quick: bool, wall_s: float, machine: str,
                    command: str) -> str:
    p, m, t, te = base["problem"], base.get("model", {}), base["train"], base.get("test", {})
    lines = [f"# Table 1: test excess risk after adaptation{' (quick run)' if quick else ''}", "",
             f"`{command}`: wall time **{wall_s:.1f} s** ({machine}).", "",
             f"Setting (MATH.md 7; base config `experiments/table1/base.toml`): d = {p['d']}, k = {p['k']}, "
             f"sigma = {p['noise_std']}, Sigma* = diag({', '.join(fmt(x) for x in np.atleast_1d(p['task_cov']))}), "
             f"k' = {m.get('width')}, N = {t['tasks']}, m_in = {t['m_in']}, m_out = {t['m_out']}, "
             f"alpha = {t['alpha']}, beta = {t['beta']}, init_scale = {m.get('init_scale')}, "
             f"m_test = {te.get('m_test')}, {te.get('tasks')} test tasks per seed; "
             f"{len(seeds)} seeds ({seeds[0]}..{seeds[-1]}: problem.seed = train.seed = s, test.seed = 1000 + s).",
             "",
             "Excess risk: mean +- standard deviation over seeds of each seed's mean over its test tasks "
             "(same B* and same test tasks for every row of a seed). perp_norm = ||P_perp B||_2 at the end "
             "(mean over seeds).",
             ""]
    tol = next((r["rank_rel_tol"] for r in table if r["rank_rel_tol"] is not None), None)
    header = ["row", "training", "steps", "test-time adaptation", "excess risk", "perp_norm",
              f"rank (tol {tol:g})" if tol else "rank", f"rank (tol {COARSE_TOL:g})", "paper"]
    body = []
    for r in table:
        risk = f"{fmt(r['excess_risk_mean'])} +- {fmt(r['excess_risk_std'], 2)}" if r["completed"] else "diverged"
        if r["completed"] < r["seeds"] and r["completed"]:
            risk += f" ({r['completed']}/{r['seeds']} seeds)"
        body.append([r["label"], r["training"], r["steps"] or "-", r["test_adapt"], risk,
                     f"{fmt(r['perp_norm_mean'])}", _span(r["rank_min"], r["rank_max"]),
                     _span(r["rank_10_min"], r["rank_10_max"]), PAPER.get(r["row"], "")])
    lines.append(markdown_table(header, body))
    lines += ["The two rank columns count singular values of B above 1e-2 and 1e-1 of the largest (min-max over "
              "seeds). The `paper` column quotes the paper's values for its own (partly "
              "unstated) settings; nothing here was tuned toward them.", "", "## Findings (measured)", ""]
    lines += [f"- {s}" for s in findings(table, results)]
    notes = [f"- **{r['label']}**: {r['note']}" for r in table if r["note"]]
    if notes:
        lines += ["", "## Rows", ""] + notes
    lines += ["", "The config of every (row, seed) is in `configs/`; `metarep run configs/<row>_seed<s>.toml` "
              "reruns that entry alone.", ""]
    return "\n".join(lines)


def table1(out: Path, *, seeds: int = 5, quick: bool = False, workers: int = 2, experiments=None,
           only: tuple[str, ...] = (), echo: Callable[[str], None] = print, command: str = "") -> dict:
    """Run the table and write out/table1.md, table1.csv, table1_seeds.csv and configs/."""
    start = time.perf_counter()
    machine = machine_line(workers)
    if seeds < 1:
        raise ConfigError("--seeds must be at least 1")
    rows = load_rows(quick=quick, experiments=experiments, only=only)
    seed_list = list(range(seeds))
    out = Path(out)
    (out / "configs").mkdir(parents=True, exist_ok=True)
    for row in rows:
        for s in seed_list:
            cfg = validate(with_seed(row.data, s))
            header = (f"# table1 row {row.key!r} ({row.label}), seed {s}"
                      f"{', quick mode' if quick else ''}.\n# `metarep run` on this file reruns this entry.\n")
            atomic_write(out / "configs" / f"{row.key}_seed{s}.toml", (header + tomli_w.dumps(cfg.to_dict())).encode())
    jobs, costs = plan(rows, seed_list)
    echo(f"table1: {len(rows)} rows x {seeds} seeds as {len(jobs)} jobs on {workers} worker(s)")
    done = [0]

    def progress(i, result, seconds):
        done[0] += 1
        job = jobs[i]
        status = ",".join(sorted({r["status"] for r in result}))
        echo(f"  [{done[0]}/{len(jobs)}] {job['row']} seed{'s' if len(job['seeds']) > 1 else ''} "
             f"{','.join(map(str, job['seeds']))}: {status} in {seconds:.1f} s")

    results = [r for batch in parallel_map(run_job, jobs, workers=workers, costs=costs, on_done=progress)
               for r in batch]
    results.sort(key=lambda r: ([row.key for row in rows].index(r["row"]), r["seed"]))
    table = aggregate(rows, results)
    wall = time.perf_counter() - start
    base, _ = compose([experiments_dir(experiments) / "table1" / "base.toml"], quick=quick)
    command = command or f"metarep reproduce table1 --seeds {seeds}{' --quick' if quick else ''} --workers {workers}"
    text = render_markdown(table, results, base=base, seeds=seed_list, quick=quick, wall_s=wall, machine=machine,
                           command=command)
    write_text(out / "table1.md", text)
    write_csv(out / "table1.csv", table, CSV_COLUMNS)
    write_csv(out / "table1_seeds.csv", results, SEED_COLUMNS)
    echo(text)
    echo(f"table1: wall time {wall:.1f} s; wrote {out / 'table1.md'}, table1.csv, table1_seeds.csv, configs/")
    return {"table": table, "results": results, "wall_s": wall}
