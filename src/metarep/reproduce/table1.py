"""Table 1 of the paper (its section 5) in the setting of MATH.md section 7.

Rows are experiments/table1/NN_<row>.toml on top of experiments/table1/base.toml. Every row
runs S seeds; seed s fixes B* (problem.seed = s), the initialisation and training tasks
(train.seed = s) and the test tasks (test.seed = 1000 + s), so rows are compared pairwise.
Exact infinite-task FO-ANIL rows advance all their seeds in one batched population run; every
other (row, seed) is one engine.run, spread over worker processes.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tomli_w

from metarep.config.schema import ConfigError, validate
from metarep.linear.metrics import numerical_rank
from metarep.reproduce import protocol, table1_plot, verdict
from metarep.reproduce.common import (
    adapt_description,
    batchable,
    compose,
    deep_merge,
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
from metarep.storage.atomic import atomic_write

COARSE_TOL = 0.1         # a second, coarser rank threshold: 1/t unlearning makes the 1e-2 one slow to reach
ROW_FILE = re.compile(r"^(\d+)_(\w+)\.toml$")
CSV_COLUMNS = ("row", "label", "method", "training", "tasks", "m_in", "m_out", "steps", "width", "test_adapt",
               "seeds", "completed", "excess_risk_mean", "excess_risk_std", "excess_risk_se_mean", "tuned_risk_mean",
               "tuned_risk_std", "tuned_rules",
               "perp_norm_mean", "perp_norm_std", "align_norm_mean", "mean_norm_mean", "lambda_rel_err_mean",
               "rank_min", "rank_max", "rank_rel_tol", "rank_10_min", "rank_10_max", "cpu_s")
SEED_COLUMNS = ("row", "seed", "status", "excess_risk", "excess_risk_se", "tuned_risk", "tuned_risk_se",
                "tuned_validation", "tuned_rule", "perp_norm", "align_norm", "mean_norm",
                "lambda_rel_err", "rank", "rank_10", "steps", "cpu_s", "message")


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    training: str
    note: str
    paper: str          # the paper's value for this row, quoted beside ours
    data: dict          # config data without seeds
    optional: bool = False  # run only when --rows names it


def _row_key(path: Path) -> str | None:
    found = ROW_FILE.match(path.name)
    return found.group(2) if found else None


def _load_row(base: Path, path: Path, key: str, *, quick: bool, steps: int | None) -> Row:
    """One row file on top of base.toml, validated (seed 0); `steps` for its iterative method."""
    data, meta = compose([base, path], quick=quick)
    info = meta.get("row", {})
    try:
        config = validate(with_seed(data, 0))
        if steps is not None and config.method_spec.iterative:
            data = deep_merge(data, {"train": {"steps": steps, "log_every": max(1, steps // 50)}})
            validate(with_seed(data, 0))
    except ConfigError as err:
        raise ConfigError(f"{path.name}: {err}") from None
    return Row(key, info.get("label", key), info.get("training", ""), info.get("note", ""), info.get("paper", ""),
               data, bool(info.get("optional", False)))


def load_rows(*, quick: bool, experiments=None, only: tuple[str, ...] = (), steps: int | None = None) -> list[Row]:
    """The rows of experiments/table1, in file order (optional rows only when `only` names
    them); each validated once (seed 0). With `steps`, every iterative row trains that many
    outer steps (equal training)."""
    folder = experiments_dir(experiments) / "table1"
    base = folder / "base.toml"
    if not base.exists():
        raise ConfigError(f"{str(base)!r} not found")
    files = {key: p for p in sorted(folder.glob("*.toml"), key=lambda p: p.name) if (key := _row_key(p))}
    unknown = sorted(set(only) - set(files))
    if unknown:
        raise ConfigError(f"unknown table1 row(s) {', '.join(unknown)}; known: {', '.join(files)}")
    rows = [_load_row(base, path, key, quick=quick, steps=steps) for key, path in files.items()
            if not only or key in only]
    # an optional row ([row] optional = true: too costly for the default table) runs only when named
    return [r for r in rows if not r.optional or r.key in only]


def _result(row: str, seed: int, summ: dict, cpu_s: float) -> dict:
    """One (row, seed): excess_risk under the row's own rule; tuned_* under the tuned rule
    (None for a row that is not tuned)."""
    final, score = summ["final"], protocol.scores(summ["test"])
    return {"row": row, "seed": seed, "status": summ["status"], "excess_risk": score["own"],
            "excess_risk_se": score["own_se"], "tuned_risk": score["tuned"], "tuned_risk_se": score["tuned_se"],
            "tuned_validation": score["tuned_validation"], "tuned_rule": score["tuned_rule"],
            "perp_norm": final["perp_norm"],
            "align_norm": final["align_norm"], "mean_norm": final["mean_norm"],
            "lambda_rel_err": final["lambda_rel_err"], "rank": final["rank"], "rank_rel_tol": final["rank_rel_tol"],
            "rank_10": int(numerical_rank(np.asarray(final["singular_values"]), COARSE_TOL)),
            "steps": summ["steps"], "cpu_s": cpu_s, "message": summ["message"]}


def run_job(job: dict) -> list[dict]:
    """One unit of work: a batched population run over seeds, or one engine.run."""
    start = time.perf_counter()
    configs = [validate(c) for c in job["configs"]]
    if job["batch"]:
        runs = population_batch(configs)
        cpu = (time.perf_counter() - start) / len(runs)
        return [_result(job["row"], s, summ, cpu) for s, (_, _, summ) in zip(job["seeds"], runs)]
    from metarep.engine import run

    _, _, summ = run(configs[0])
    return [_result(job["row"], job["seeds"][0], summ, time.perf_counter() - start)]


def _cost(config) -> float:
    """A rough relative cost, for scheduling the longest jobs first (a direct fit: a small fixed one)."""
    t, d, method = config.train, config.problem.d, config.method_spec
    if not method.iterative:
        return 1e6
    if t.tasks == "inf":
        return 0.5 * t.steps * d * config.model.width ** 2
    n = t.batch_tasks if t.tasks == "online" else t.tasks
    return method.relative_cost * t.steps * n * (t.m_in + t.m_out) * d


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
    """The training regime in words (a row's [row] training, e.g. "none", takes precedence)."""
    t = config.train
    if t.tasks == "inf":
        return "inf tasks, inf samples" if t.m_in == "inf" else f"inf tasks (exact), m_in {t.m_in}"
    if t.tasks == "online":
        return f"online, {t.batch_tasks} fresh tasks/step"
    return f"N = {t.tasks}, m_in {t.m_in} + m_out {t.m_out}"


def _stats(done: list[dict]) -> dict:
    """Mean (and spread) over the completed seeds of one row."""
    risk, risk_std = mean_std([r["excess_risk"] for r in done])
    tuned = [r["tuned_risk"] for r in done if r["tuned_risk"] is not None]
    tuned_risk, tuned_std = mean_std(tuned) if tuned else (None, None)
    perp, perp_std = mean_std([r["perp_norm"] for r in done])
    ranks, ranks10 = [r["rank"] for r in done], [r["rank_10"] for r in done]
    return {"excess_risk_mean": risk, "excess_risk_std": risk_std,
            "excess_risk_se_mean": mean_std([r["excess_risk_se"] for r in done])[0],
            "tuned_risk_mean": tuned_risk, "tuned_risk_std": tuned_std,
            "tuned_rules": protocol.chosen([r["tuned_rule"] for r in done]) if tuned else None,
            "perp_norm_mean": perp, "perp_norm_std": perp_std,
            "align_norm_mean": mean_std([r["align_norm"] for r in done])[0],
            "mean_norm_mean": mean_std([r["mean_norm"] for r in done])[0],
            "lambda_rel_err_mean": mean_std([r["lambda_rel_err"] for r in done])[0],
            "rank_min": min(ranks, default=None), "rank_max": max(ranks, default=None),
            "rank_rel_tol": done[0]["rank_rel_tol"] if done else None,
            "rank_10_min": min(ranks10, default=None), "rank_10_max": max(ranks10, default=None)}


def _describe(row: Row) -> dict:
    """What a row is, from its config and the method's declaration."""
    cfg = validate(with_seed(row.data, 0))
    t, p, method = cfg.train, cfg.problem, cfg.method_spec
    return {"row": row.key, "label": row.label, "method": cfg.method.name,
            "training": row.training or training_text(cfg), "tasks": t.tasks, "m_in": t.m_in, "m_out": t.m_out,
            "steps": t.steps if method.iterative else 0, "width": method.width(p.d, p.k, cfg.model.width),
            "test_adapt": adapt_description(cfg), "note": row.note, "paper": row.paper}


def aggregate(rows: list[Row], results: list[dict]) -> list[dict]:
    table = []
    for row in rows:
        mine = [r for r in results if r["row"] == row.key]
        done = [r for r in mine if r["status"] == "completed"]
        table.append({**_describe(row), "seeds": len(mine), "completed": len(done), **_stats(done),
                      "cpu_s": float(sum(r["cpu_s"] for r in mine)),
                      "messages": sorted({r["message"] for r in mine if r["status"] != "completed"})})
    return table


def paired(results: list[dict], a: str, b: str, key: str = "excess_risk") -> verdict.Verdict | None:
    """The verdict on "row a has lower `key` than row b" from the paired differences over the
    seeds both completed (None when there are none)."""
    ra = {r["seed"]: r[key] for r in results if r["row"] == a and r["status"] == "completed" and r[key] is not None}
    rb = {r["seed"]: r[key] for r in results if r["row"] == b and r["status"] == "completed" and r[key] is not None}
    common = sorted(set(ra) & set(rb))
    return verdict.paired([ra[s] - rb[s] for s in common]) if common else None


def _horizon(ra: dict, rb: dict) -> str:
    sa, sb = ra["steps"], rb["steps"]
    if not (sa and sb):
        return ""
    return f", both after {sa} training steps" if sa == sb else f", after {sa} vs {sb} training steps"


def compare(by: dict, results: list[dict], a: str, b: str, what: str) -> str | None:
    """The paired comparison of rows a and b, under each row's own rule and under the tuned rule,
    with its verdict on "a is lower" (None if either row is missing)."""
    p = paired(results, a, b) if a in by and b in by else None
    if p is None:
        return None
    ra, rb = by[a], by[b]
    text = (f"{what}: is {ra['label']} lower than {rb['label']}? Own rules: {fmt(ra['excess_risk_mean'])} vs "
            f"{fmt(rb['excess_risk_mean'])}, paired difference {p.text()}")
    tuned = paired(results, a, b, "tuned_risk")
    if tuned is not None and tuned.n:
        text += (f"; tuned rule: {fmt(ra['tuned_risk_mean'])} vs {fmt(rb['tuned_risk_mean'])}, paired difference "
                 f"{tuned.text()}")
    return text + f"{_horizon(ra, rb)}."


def _unlearning(a: dict, b: dict) -> str:
    return (f"Unlearning: final perp_norm {fmt(a['perp_norm_mean'])} with m_in = {a['m_in']} against "
            f"{fmt(b['perp_norm_mean'])} with m_in = {b['m_in']} (rank of B at tolerance {a['rank_rel_tol']}: "
            f"{_span(a['rank_min'], a['rank_max'])} vs {_span(b['rank_min'], b['rank_max'])}; at "
            f"{COARSE_TOL}: {_span(a['rank_10_min'], a['rank_10_max'])} vs "
            f"{_span(b['rank_10_min'], b['rank_10_max'])}).")


def _lowest(table: list[dict], key: str) -> str:
    done = [r for r in table if r["completed"]]
    best = min(done, key=lambda r: r["excess_risk_mean"])
    ref = next(r for r in table if r["row"] == key)
    if best["row"] == key:
        return f"{ref['label']} has the lowest risk, {fmt(ref['excess_risk_mean'])}."
    return (f"Lowest mean risk: {best['label']} ({fmt(best['excess_risk_mean'])}), below {ref['label']}'s "
            f"{fmt(ref['excess_risk_mean'])}: check the settings.")


def findings(table: list[dict], results: list[dict], spec: dict) -> list[str]:
    """Sentences computed from the numbers; `spec` (base.toml's [table]) names the rows compared."""
    by = {r["row"]: r for r in table}
    out = [s for c in spec.get("compare", []) if (s := compare(by, results, c["a"], c["b"], c["what"]))]
    pair = spec.get("unlearning", [])
    if len(pair) == 2 and all(k in by for k in pair):
        out.append(_unlearning(by[pair[0]], by[pair[1]]))
    if spec.get("lowest") in by and any(r["completed"] for r in table):
        out.append(_lowest(table, spec["lowest"]))
    for r in table:
        if r["completed"] < r["seeds"]:
            out.append(f"{r['label']}: {r['seeds'] - r['completed']} of {r['seeds']} seeds did not complete "
                       f"({'; '.join(r['messages'])}).")
    return out


def _span(lo, hi) -> str:
    return "-" if lo is None else str(lo) if lo == hi else f"{lo}-{hi}"


def _setting(base: dict, seeds: list[int], steps: int | None) -> str:
    p, m, t, te = base["problem"], base.get("model", {}), base["train"], base.get("test", {})
    equal = (f" Equal training: every iterative row trains {steps} outer steps (`--steps {steps}`)."
             if steps is not None else "")
    return (f"Setting (MATH.md 7; base config `experiments/table1/base.toml`): d = {p['d']}, k = {p['k']}, "
            f"sigma = {p['noise_std']}, Sigma* = diag({', '.join(fmt(x) for x in np.atleast_1d(p['task_cov']))}), "
            f"k' = {m.get('width')}, N = {t['tasks']}, m_in = {t['m_in']}, m_out = {t['m_out']}, "
            f"alpha = {t['alpha']}, beta = {t['beta']}, init_scale = {m.get('init_scale')}, "
            f"m_test = {te.get('m_test')}, {te.get('tasks')} test tasks per seed; "
            f"{len(seeds)} seeds ({seeds[0]}..{seeds[-1]}: problem.seed = train.seed = s, test.seed = 1000 + s)."
            + equal)


def _table_body(table: list[dict]) -> list[list]:
    body = []
    for r in table:
        risk = f"{fmt(r['excess_risk_mean'])} +- {fmt(r['excess_risk_std'], 2)}" if r["completed"] else "diverged"
        if r["completed"] < r["seeds"] and r["completed"]:
            risk += f" ({r['completed']}/{r['seeds']} seeds)"
        tuned = (f"{fmt(r['tuned_risk_mean'])} +- {fmt(r['tuned_risk_std'], 2)} ({r['tuned_rules']})"
                 if r["completed"] and r["tuned_risk_mean"] is not None else "-")
        body.append([r["label"], r["training"], r["steps"] or "-", r["test_adapt"], risk, tuned,
                     f"{fmt(r['perp_norm_mean'])}", _span(r["rank_min"], r["rank_max"]),
                     _span(r["rank_10_min"], r["rank_10_max"]), r["paper"]])
    return body


def render_markdown(table, notes: list[str], *, base: dict, seeds, quick: bool, wall_s: float, machine: str,
                    command: str, steps: int | None = None) -> str:
    lines = [f"# Table 1: test excess risk after adaptation{' (quick run)' if quick else ''}", "",
             f"`{command}`: wall time **{wall_s:.1f} s** ({machine}).", "", _setting(base, seeds, steps), "",
             "Excess risk: mean +- standard deviation over seeds of each seed's mean over its test tasks "
             "(same B* and same test tasks for every row of a seed), first under the row's own test-time rule "
             "(the paper's protocol: one head step for the meta-learners), then under the tuned rule: every "
             "rule (gradient steps and step sizes, ridge strengths, least squares, Bayes) tried on validation "
             "tasks drawn apart from the test tasks, the lowest mean validation risk chosen per seed, and that "
             "choice scored on the same test tasks (chosen rules in brackets, with their count over seeds). "
             "perp_norm = ||P_perp B||_2 at the end (mean over seeds). Paired differences come with a 95% "
             "t-interval over seeds and a verdict: holds or does not hold only when the interval excludes "
             "zero, otherwise not decided.", "", "![table1](table1.png)", ""]
    tol = next((r["rank_rel_tol"] for r in table if r["rank_rel_tol"] is not None), None)
    header = ["row", "training", "steps", "own test-time rule", "excess risk (own rule)",
              "excess risk (tuned rule)", "perp_norm",
              f"rank (tol {tol:g})" if tol else "rank", f"rank (tol {COARSE_TOL:g})", "paper"]
    lines.append(markdown_table(header, _table_body(table)))
    lines += ["The two rank columns count singular values of B above 1e-2 and 1e-1 of the largest (min-max over "
              "seeds). The `paper` column quotes the paper's values for its own (partly "
              "unstated) settings; nothing here was tuned toward them.", "", "## Findings (measured)", ""]
    lines += [f"- {s}" for s in notes]
    row_notes = [f"- **{r['label']}**: {r['note']}" for r in table if r["note"]]
    if row_notes:
        lines += ["", "## Rows", ""] + row_notes
    lines += ["", "The config of every (row, seed) is in `configs/`; `metarep run configs/<row>_seed<s>.toml` "
              "reruns that entry alone.", ""]
    return "\n".join(lines)


def _write_configs(out: Path, rows: list[Row], seeds: list[int], quick: bool) -> None:
    (out / "configs").mkdir(parents=True, exist_ok=True)
    for row in rows:
        for s in seeds:
            cfg = validate(with_seed(row.data, s))
            header = (f"# table1 row {row.key!r} ({row.label}), seed {s}"
                      f"{', quick mode' if quick else ''}.\n# `metarep run` on this file reruns this entry.\n")
            atomic_write(out / "configs" / f"{row.key}_seed{s}.toml", (header + tomli_w.dumps(cfg.to_dict())).encode())


def _progress(jobs: list[dict], echo: Callable[[str], None]):
    done = [0]

    def progress(i, result, seconds):
        done[0] += 1
        job = jobs[i]
        status = ",".join(sorted({r["status"] for r in result}))
        echo(f"  [{done[0]}/{len(jobs)}] {job['row']} seed{'s' if len(job['seeds']) > 1 else ''} "
             f"{','.join(map(str, job['seeds']))}: {status} in {seconds:.1f} s")

    return progress


def table1(out: Path, *, seeds: int = 5, quick: bool = False, workers: int = 2, experiments=None,
           only: tuple[str, ...] = (), echo: Callable[[str], None] = print, command: str = "",
           steps: int | None = None) -> dict:
    """Run the table and write out/table1.md, table1.csv, table1_seeds.csv, table1.png and configs/.
    With `steps`, every iterative row trains that many outer steps."""
    start = time.perf_counter()
    machine = machine_line(workers)
    if seeds < 1:
        raise ConfigError("--seeds must be at least 1")
    rows = load_rows(quick=quick, experiments=experiments, only=only, steps=steps)
    seed_list = list(range(seeds))
    out = Path(out)
    _write_configs(out, rows, seed_list, quick)
    jobs, costs = plan(rows, seed_list)
    echo(f"table1: {len(rows)} rows x {seeds} seeds as {len(jobs)} jobs on {workers} worker(s)")
    results = [r for batch in parallel_map(run_job, jobs, workers=workers, costs=costs, on_done=_progress(jobs, echo))
               for r in batch]
    results.sort(key=lambda r: ([row.key for row in rows].index(r["row"]), r["seed"]))
    table = aggregate(rows, results)
    wall = time.perf_counter() - start
    base, meta = compose([experiments_dir(experiments) / "table1" / "base.toml"], quick=quick)
    command = command or (f"metarep reproduce table1 --seeds {seeds}{' --quick' if quick else ''}"
                          f"{f' --steps {steps}' if steps is not None else ''} --workers {workers}")
    text = render_markdown(table, findings(table, results, meta.get("table", {})), base=base, seeds=seed_list,
                           quick=quick, wall_s=wall, machine=machine, command=command, steps=steps)
    write_text(out / "table1.md", text)
    write_csv(out / "table1.csv", table, CSV_COLUMNS)
    write_csv(out / "table1_seeds.csv", results, SEED_COLUMNS)
    p, t = base["problem"], base["train"]
    table1_plot.draw(table, out / "table1.png", quick=quick,
         setting=f"d = {p['d']}, k = {p['k']}, k' = {base.get('model', {}).get('width')}, N = {t['tasks']}, "
                 f"m_in = {t['m_in']}, {len(seed_list)} seeds")
    echo(text)
    echo(f"table1: wall time {wall:.1f} s; wrote {out / 'table1.md'}, table1.csv, table1_seeds.csv, table1.png, "
         "configs/")
    return {"table": table, "results": results, "wall_s": wall}
