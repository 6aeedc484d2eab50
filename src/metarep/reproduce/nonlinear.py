"""`metarep reproduce nonlinear`: the methods on two- and three-layer networks (the paper's
Appendix I question), on a linear and a relu teacher.

Settings: experiments/nonlinear/base.toml (config sections, [study] for the grid and the figure).
Table: test excess risk (mean +- s.e. over seeds) of every method for each teacher and depth,
width k' = d, paired across methods (same B*, initialisation, training and test tasks per seed),
under one rule for all (the tuned rule: every test-time rule and its hyper-parameters tried on
validation tasks, the best chosen) and, beside it, under each method's own default rule. The
comparisons of [study] compare get a paired verdict (95% t-interval over seeds) under both.
Figure: FO-ANIL's first-layer norms and the representation's effective rank over training with
fresh tasks every step, for a small and a large m_in. Findings are computed from the numbers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from metarep.config.schema import ConfigError, validate
from metarep.reproduce import protocol, verdict
from metarep.reproduce.common import (
    compose,
    deep_merge,
    experiments_dir,
    fmt,
    log_points,
    machine_line,
    markdown_table,
    mean_std,
    parallel_map,
    with_seed,
    write_csv,
    write_text,
)

CURVE_KEYS = ("align_norm", "perp_norm", "effective_rank", "r2")
SEED_COLUMNS = ("teacher", "layers", "method", "seed", "status", "excess_risk", "excess_risk_se", "tuned_risk",
                "tuned_risk_se", "tuned_rule", "perp_norm", "align_norm", "effective_rank", "r2", "cpu_s")


def load(*, quick: bool, experiments=None) -> tuple[dict, dict]:
    path = experiments_dir(experiments) / "nonlinear" / "base.toml"
    if not path.exists():
        raise ConfigError(f"{str(path)!r} not found")
    data, meta = compose([path], quick=quick)
    return data, meta.get("study", {})


def run_job(job: dict) -> dict:
    """One run through the engine (in a worker): its status, test risk, final metrics and, with
    job["points"], its curve."""
    from metarep.engine import build, evaluate_final, train

    start = time.process_time()
    exp = build(validate(job["config"]))
    state = train(exp, exp.initial_state(), points=job["points"])
    score = protocol.scores(evaluate_final(exp, state))
    last = state.history[-1] if state.history else {}
    return {"status": state.status, "excess_risk": score["own"], "excess_risk_se": score["own_se"],
            "tuned_risk": score["tuned"], "tuned_risk_se": score["tuned_se"], "tuned_rule": score["tuned_rule"],
            **{k: last.get(k) for k in CURVE_KEYS},
            "curve": [{"step": r["step"], **{k: r.get(k) for k in CURVE_KEYS}} for r in state.history],
            "cpu_s": time.process_time() - start}


def table_jobs(data: dict, study: dict) -> list[dict]:
    jobs = []
    for teacher in study["teachers"]:
        for layers in study["layers"]:
            for method in study["methods"]:
                for seed in range(study["seeds"]):
                    cell = deep_merge(data, {"problem": {"teacher": teacher}, "model": {"layers": layers},
                                             "method": {"name": method}})
                    config = with_seed(cell, seed)
                    validate(config)
                    jobs.append({"kind": "table", "teacher": teacher, "layers": layers, "method": method,
                                 "seed": seed, "config": config, "points": [0, config["train"]["steps"]]})
    return jobs


def figure_jobs(data: dict, study: dict) -> list[dict]:
    fig = study["figure"]
    jobs = []
    for teacher, activation in fig["nets"]:
        for m_in in fig["m_in"]:
            cell = deep_merge(data, {"problem": {"teacher": teacher}, "model": {"activation": activation},
                                     "method": {"name": fig["method"]},
                                     "train": {"tasks": "online", "batch_tasks": fig["batch_tasks"], "m_in": m_in,
                                               "steps": fig["steps"], "log_every": fig["steps"]}})
            config = with_seed(cell, 0)
            validate(config)
            jobs.append({"kind": "figure", "method": fig["method"], "teacher": teacher, "activation": activation,
                         "m_in": m_in,
                         "config": config, "points": log_points(fig["steps"], 40)})
    return jobs


def aggregate(jobs: list[dict], results: list[dict]) -> list[dict]:
    """One row per (teacher, layers, method): mean and s.e. over seeds of the test risk under the
    method's own rule and under the tuned rule, final norms."""
    cells: dict[tuple, list[dict]] = {}
    for job, res in zip(jobs, results):
        if job["kind"] == "table":
            cells.setdefault((job["teacher"], job["layers"], job["method"]), []).append(res)
    rows = []
    for (teacher, layers, method), runs in cells.items():
        ok = [r for r in runs if r["status"] == "completed"]
        risk, sd = mean_std([r["excess_risk"] for r in ok])
        tuned = [r["tuned_risk"] for r in ok if r["tuned_risk"] is not None]
        t_risk, t_sd = mean_std(tuned) if tuned else (float("nan"), float("nan"))
        rows.append({"teacher": teacher, "layers": layers, "method": method, "seeds": len(runs),
                     "completed": len(ok), "excess_risk_mean": risk,
                     "excess_risk_se": sd / len(ok) ** 0.5 if len(ok) > 1 else float("nan"),
                     "tuned_risk_mean": t_risk,
                     "tuned_risk_se": t_sd / len(tuned) ** 0.5 if len(tuned) > 1 else float("nan"),
                     "tuned_rules": protocol.chosen([r["tuned_rule"] for r in ok]),
                     **{f"{k}_mean": mean_std([r[k] for r in ok])[0] for k in CURVE_KEYS}})
    return rows


def unlearning_notes(curves: list[tuple[dict, dict]]) -> list[str]:
    """Per network: how perp_norm changed over training at each m_in, and whether it shrinks more
    for the small m_in (the linear theory: unlearning for finite m_in, none for m_in = inf)."""
    out = []
    for teacher, activation in sorted({(j["teacher"], j["activation"]) for j, _ in curves}):
        net = (teacher, activation)
        runs = sorted(((j["m_in"], j, r) for j, r in curves if (j["teacher"], j["activation"]) == net),
                      key=lambda x: x[0])
        ratios = [(m, r["curve"][-1]["perp_norm"] / r["curve"][0]["perp_norm"]) for m, _, r in runs if r["curve"]]
        if len(ratios) != 2:
            continue
        (m_small, small), (m_large, large) = ratios
        if small < 0.8 * large:
            verdict = "shrinks more for the small m_in, as the linear theory predicts"
        elif large <= 1.25 * small:
            verdict = ("shrinks about as much or more for the large m_in: the linear theory's m_in dependence "
                       "does not hold")
        else:
            verdict = "shrinks less for the large m_in"
        method = runs[0][1]["method"]
        out.append(f"{method}, {activation} network, {teacher} teacher: perp_norm changes by x{fmt(small, 2)} at "
                   f"m_in = {m_small} and x{fmt(large, 2)} at m_in = {m_large} over training (online tasks); "
                   f"it {verdict}.")
    return out


def ranking_notes(rows: list[dict]) -> list[str]:
    """Per (teacher, layers): the methods ordered by mean test excess risk under the tuned rule
    (one rule for all), each method's own default rule's risk in brackets."""
    out = []
    for teacher, layers in sorted({(r["teacher"], r["layers"]) for r in rows}):
        cell = sorted((r for r in rows if (r["teacher"], r["layers"]) == (teacher, layers)),
                      key=lambda r: (r["tuned_risk_mean"], r["excess_risk_mean"]))
        ranking = " < ".join(f"{r['method']} {fmt(r['tuned_risk_mean'])} ({fmt(r['excess_risk_mean'])})" for r in cell)
        out.append(f"{teacher} teacher, {layers} layers, test excess risk under the tuned rule (own default rule): "
                   f"{ranking}.")
    return out


def paired_notes(jobs: list[dict], results: list[dict], pairs: list[dict]) -> tuple[list[str], list[dict]]:
    """For each (teacher, layers) and each pair {a, b} of [study] compare: the verdict on "a is
    lower than b" from the paired differences over seeds, under the tuned rule and under each
    method's own rule. Returns the sentences and their rows (for nonlinear_verdicts.csv)."""
    risk: dict = {}
    for job, res in zip(jobs, results):
        if job["kind"] == "table" and res["status"] == "completed":
            risk[(job["teacher"], job["layers"], job["method"], job["seed"])] = res
    cells = sorted({(j["teacher"], j["layers"]) for j in jobs if j["kind"] == "table"})
    notes, rows = [], []
    for teacher, layers in cells:
        for pair in pairs:
            a, b = pair["a"], pair["b"]
            seeds = sorted(s for (t, n, m, s) in risk if (t, n, m) == (teacher, layers, a)
                           and (teacher, layers, b, s) in risk)
            if not seeds:
                continue
            said = []
            for rule, key in (("tuned rule", "tuned_risk"), ("own rules", "excess_risk")):
                diffs = [risk[(teacher, layers, a, s)][key] - risk[(teacher, layers, b, s)][key] for s in seeds
                         if risk[(teacher, layers, a, s)][key] is not None
                         and risk[(teacher, layers, b, s)][key] is not None]
                v = verdict.paired(diffs)
                rows.append({"teacher": teacher, "layers": layers, "a": a, "b": b, "rule": rule, **v.as_dict()})
                said.append(f"{rule} {v.text()}")
            notes.append(f"{teacher} teacher, {layers} layers: is {a} lower than {b}? " + "; ".join(said) + ".")
    return notes, rows


def render(rows: list[dict], notes: list[str], header: str) -> str:
    table = markdown_table(
        ("teacher", "layers", "method", "excess risk, tuned rule (chosen)", "excess risk, own rule", "perp_norm",
         "align_norm", "eff. rank", "R^2", "runs"),
        [(r["teacher"], r["layers"], r["method"],
          f"{fmt(r['tuned_risk_mean'])} +- {fmt(r['tuned_risk_se'], 2)} ({r['tuned_rules']})",
          f"{fmt(r['excess_risk_mean'])} +- {fmt(r['excess_risk_se'], 2)}", fmt(r["perp_norm_mean"]),
          fmt(r["align_norm_mean"]), fmt(r["effective_rank_mean"]), fmt(r["r2_mean"]),
          f"{r['completed']}/{r['seeds']}") for r in rows])
    return (f"# Nonlinear networks\n\n{header}\n\n{table}\n## Findings\n\n"
            + "\n".join(f"- {n}" for n in notes) + "\n\n![norms and effective rank](nonlinear.png)\n")


def run(out: Path, *, quick: bool = False, workers: int = 2, experiments=None,
              echo: Callable[[str], None] = print) -> list[dict]:
    """Run the table and the figure into `out` (nonlinear.md, .csv, _seeds.csv, _curves.csv, .png)."""
    from metarep.reproduce.nonlinear_plot import plot_curves

    data, study = load(quick=quick, experiments=experiments)
    jobs = table_jobs(data, study) + figure_jobs(data, study)
    start = time.perf_counter()
    header = (f"{machine_line(workers)}; settings experiments/nonlinear/base.toml"
              f"{' (--quick)' if quick else ''}.")
    results = parallel_map(run_job, jobs, workers=workers,
                           costs=[j["config"]["train"]["steps"] * (3 if j["kind"] == "figure" else 1) for j in jobs],
                           on_done=lambda i, r, s: echo(f"  {_label(jobs[i])}: {r['status']} ({s:.0f} s)"))
    rows = aggregate(jobs, results)
    curves = [(j, r) for j, r in zip(jobs, results) if j["kind"] == "figure"]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "nonlinear.csv", rows)
    write_csv(out / "nonlinear_seeds.csv", [{**{k: j.get(k) for k in SEED_COLUMNS}, **{
        k: r.get(k) for k in SEED_COLUMNS if k in r}} for j, r in zip(jobs, results) if j["kind"] == "table"],
        SEED_COLUMNS)
    write_csv(out / "nonlinear_curves.csv", [{"teacher": j["teacher"], "activation": j["activation"],
                                              "m_in": j["m_in"], **row} for j, r in curves for row in r["curve"]])
    plot_curves(out / "nonlinear.png", curves, quick=quick)
    verdict_notes, verdicts = paired_notes(jobs, results, study.get("compare", []))
    write_csv(out / "nonlinear_verdicts.csv", verdicts,
              ("teacher", "layers", "a", "b", "rule", "n", "mean", "se", "low", "high", "verdict"))
    notes = unlearning_notes(curves) + ranking_notes(rows) + verdict_notes
    header += f" Wall time {time.perf_counter() - start:.0f} s."
    write_text(out / "nonlinear.md", render(rows, notes, header))
    echo(f"wrote {out / 'nonlinear.md'}")
    return rows


def _label(job: dict) -> str:
    if job["kind"] == "figure":
        return f"figure {job['activation']} net, {job['teacher']} teacher, m_in {job['m_in']}"
    return f"{job['teacher']} teacher, {job['layers']} layers, {job['method']}, seed {job['seed']}"
