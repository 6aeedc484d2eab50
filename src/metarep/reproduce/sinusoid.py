"""`metarep reproduce sinusoid`: MAML's few-shot sinusoid regression (problem.family =
"sinusoid"), every mlp method at K = 5, 10, 20 and label noise sigma in {0, 0.3, 1}.

Settings: experiments/sinusoid/base.toml (config sections, [study] for the grid). Table, per
(sigma, K, method), mean +- s.e. over seeds: the benchmark's MSE after 0, 1 and 10 test-time
steps (test.family), the tuned rule's MSE (test.adapt = "tuned"), the share of the features'
energy outside span{1, sin x, cos x} at the start and at the end of training (span_outside) and
the features' effective rank; the oracle per (sigma, K). Paired verdicts over seeds (the same
initialisation, training stream and test tasks per seed): the pairs of [study] compare, the
head-only methods' span_outside end against start, and noise against no noise.
Figure: adapted tasks with their K points; span_outside over training by noise level.
Beside the noiseless rows, the numbers quoted in experiments/sinusoid/published.toml (when present).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from metarep.config.files import read_toml
from metarep.config.schema import ConfigError, validate
from metarep.methods import get_method
from metarep.reproduce import protocol, verdict
from metarep.reproduce.common import (
    compose,
    deep_merge,
    experiments_dir,
    fmt,
    log_points,
    machine_line,
    markdown_table,
    parallel_map,
    with_seed,
    write_csv,
    write_text,
)

STEPS = ("0", "1", "10")
# The family's own oracle (least squares or the Bayes head on its true features), reported by every
# run: a row label, not the registered `oracle` method (which this family refuses).
FAMILY_ORACLE = "family oracle"
SEED_COLUMNS = ("noise", "K", "method", "seed", "status", "mse_0", "mse_1", "mse_10", "oracle_mse", "tuned",
                "tuned_rule", "span_start", "span_end", "r2_start", "r2_end", "effective_rank", "train_s", "eval_s",
                "steps")
# published.toml: every [[quote]] needs each key, of these types (see the file's header)
QUOTE_KEYS: dict[str, type | tuple[type, ...]] = {
    "source": str, "arxiv": str, "table": str, "kind": str, "method": str, "K": int, "value": (int, float),
    "interval": (int, float, str), "interval_is": str, "train_iterations": (int, str), "test_tasks": (int, str),
    "test_steps": (int, str), "retrieved_from": str}


def load(*, quick: bool, experiments=None) -> tuple[dict, dict]:
    path = experiments_dir(experiments) / "sinusoid" / "base.toml"
    if not path.exists():
        raise ConfigError(f"{str(path)!r} not found")
    data, meta = compose([path], quick=quick)
    return data, meta.get("study", {})


def load_published(path: Path) -> list[dict]:
    """The [[quote]] entries of `path` (experiments/sinusoid/published.toml), each checked for
    every key of QUOTE_KEYS; [] when the file is absent."""
    if not path.exists():
        return []
    quotes = read_toml(path).get("quote")
    if not isinstance(quotes, list) or not quotes:
        raise ConfigError(f"{str(path)!r}: no [[quote]] entries")
    for i, quote in enumerate(quotes, 1):
        missing = [k for k in QUOTE_KEYS if not isinstance(quote, dict) or k not in quote]
        if missing:
            raise ConfigError(f"{str(path)!r}: quote {i} lacks {', '.join(missing)}")
        wrong = [k for k, kind in QUOTE_KEYS.items() if isinstance(quote[k], bool) or not isinstance(quote[k], kind)]
        if wrong:
            raise ConfigError(f"{str(path)!r}: quote {i} has {', '.join(wrong)} of the wrong type")
    return quotes


def published_table(rows: list[dict], quotes: list[dict]) -> str:
    """One line per quote: metarep's noiseless MSE after 1 and 10 steps at its (K, method) ("-"
    where metarep does not run the method) beside the quoted value, its interval and source; papers
    before reimplementations."""
    ours = {(r["K"], r["method"]): r for r in rows if r["noise"] == 0}

    def quoted(q):
        spread = q["interval"]
        return f"{q['value']:g} +- {spread:g}" if not isinstance(spread, str) else f"{q['value']:g} ({spread})"

    lines = [(q["K"], q["method"], _ms(ours.get((q["K"], q["method"])), "mse_1"),
              _ms(ours.get((q["K"], q["method"])), "mse_10"), quoted(q),
              f"{q['source']}{'' if q['arxiv'] == '-' else ', arXiv ' + q['arxiv']}, {q['table']} ({q['kind']})")
             for q in sorted(quotes, key=lambda q: (q["K"], q["method"], not q["kind"].startswith("paper")))]
    return ("## metarep vs published (noiseless)\n\nmetarep: mean +- s.e. over seeds; published: as quoted, "
            "each one's protocol and where it was read in experiments/sinusoid/published.toml.\n\n"
            + markdown_table(("K", "method", "metarep MSE, 1 step", "metarep MSE, 10 steps", "published",
                              "source"), lines))


def make_jobs(data: dict, study: dict) -> list[dict]:
    """One run per (noise, K, method, seed); a method that keeps one head per task (its
    declaration) trains on a fixed set of study.pretrain_tasks tasks instead of fresh ones."""
    jobs = []
    for noise in study["noise"]:
        for K in study["shots"]:
            for method in study["methods"]:
                train = {"m_in": K, "m_out": K}
                if get_method(method, "mlp").per_task_state:
                    train["tasks"] = study["pretrain_tasks"]
                cell = deep_merge(data, {"problem": {"noise_std": float(noise)}, "method": {"name": method},
                                         "train": train, "test": {"m_test": K}})
                for seed in range(study["seeds"]):
                    config = with_seed(cell, seed)
                    validate(config)
                    keep = seed == 0 and noise == 0 and study["figure_shots"] == K \
                        and method in study["figure_methods"]
                    jobs.append({"kind": "table", "noise": float(noise), "K": K, "method": method, "seed": seed,
                                 "config": config, "keep_params": keep,
                                 "points": log_points(config["train"]["steps"], 25)})
    return jobs + long_jobs(data, study)


def long_jobs(data: dict, study: dict) -> list[dict]:
    """The cheap head-only methods trained study.long.steps steps (K = figure_shots, every noise
    level, study.long.seeds seeds): the unlearning curves well past the table's training."""
    long = study.get("long")
    if not long:
        return []
    K, jobs = study["figure_shots"], []
    for noise in study["noise"]:
        for method in long["methods"]:
            cell = deep_merge(data, {"problem": {"noise_std": float(noise)}, "method": {"name": method},
                                     "train": {"m_in": K, "m_out": K, "steps": long["steps"],
                                               "log_every": long["steps"]}, "test": {"m_test": K}})
            for seed in range(long["seeds"]):
                config = with_seed(cell, seed)
                validate(config)
                jobs.append({"kind": "long", "noise": float(noise), "K": K, "method": method, "seed": seed,
                             "config": config, "keep_params": False, "points": log_points(long["steps"], 40)})
    return jobs


def run_job(job: dict) -> dict:
    """One run through the engine (in a worker): status, the family's test object, the tuned
    score, span_outside at the start and the end, the curve, the CPU seconds of training and of
    the test, and (job["keep_params"]) the trained network."""
    from metarep.engine import build, evaluate_final, train

    start = time.process_time()
    exp = build(validate(job["config"]))
    state = train(exp, exp.initial_state(), points=job["points"])
    trained = time.process_time()
    test = evaluate_final(exp, state)
    family = (test or {}).get("family") or {}
    score = protocol.scores(test)
    first, last = (state.history[0], state.history[-1]) if state.history else ({}, {})
    K = str(job["K"])
    return {"status": state.status, "steps": state.step,
            **{f"mse_{s}": family.get("mse", {}).get(K, {}).get(s) for s in STEPS},
            "oracle_mse": family.get("oracle_mse", {}).get(K), "tuned": score["tuned"],
            "tuned_rule": score["tuned_rule"],
            "span_start": first.get("span_outside"), "span_end": last.get("span_outside"),
            "r2_start": first.get("r2"), "r2_end": last.get("r2"),
            "effective_rank": last.get("effective_rank"), "adapts": family.get("adapts"),
            "curve": [{"step": r["step"], "span_outside": r.get("span_outside"), "r2": r.get("r2"),
                       "effective_rank": r.get("effective_rank")} for r in state.history],
            "params": {k: np.asarray(v) for k, v in state.params._asdict().items()} if job["keep_params"] else None,
            "train_s": trained - start, "eval_s": time.process_time() - trained}


def _mean_se(values) -> tuple[float, float]:
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(v.size)) if v.size > 1 else float("nan")


def aggregate(jobs: list[dict], results: list[dict]) -> list[dict]:
    """One row per (noise, K, method), and one oracle row per (noise, K): means and s.e. over seeds."""
    cells: dict[tuple, list[dict]] = {}
    for job, res in zip(jobs, results):
        cells.setdefault((job["noise"], job["K"], job["method"]), []).append(res)
    rows = []
    for (noise, K, method), runs in cells.items():
        ok = [r for r in runs if r["status"] == "completed"]
        row = {"noise": noise, "K": K, "method": method, "seeds": len(runs), "completed": len(ok),
               "adapts": ok[0]["adapts"] if ok else "-", "tuned_rules": protocol.chosen([r["tuned_rule"] for r in ok])}
        for key in ("mse_0", "mse_1", "mse_10", "tuned", "span_start", "span_end", "r2_start", "r2_end",
                    "effective_rank", "oracle_mse"):
            row[key], row[f"{key}_se"] = _mean_se(r[key] for r in ok)
        rows.append(row)
    for noise, K in sorted({(r["noise"], r["K"]) for r in rows}):
        cell = [r for r in rows if (r["noise"], r["K"]) == (noise, K)]
        mean, se = cell[0]["oracle_mse"], cell[0]["oracle_mse_se"]
        rows.append({"noise": noise, "K": K, "method": FAMILY_ORACLE, "seeds": cell[0]["seeds"],
                     "completed": cell[0]["completed"], "adapts": "head on (sin x, cos x)", "tuned_rules": "-",
                     "mse_0": None, "mse_1": mean, "mse_1_se": se, "mse_10": mean, "mse_10_se": se})
    return sorted(rows, key=lambda r: (r["noise"], r["K"]))


def _by_seed(jobs, results) -> dict:
    return {(j["noise"], j["K"], j["method"], j["seed"]): r for j, r in zip(jobs, results)
            if r["status"] == "completed"}


def _paired(diffs, sign=-1) -> verdict.Verdict:
    return verdict.paired([d for d in diffs if d is not None and np.isfinite(d)], sign=sign)


def verdicts(jobs: list[dict], results: list[dict], study: dict) -> tuple[list[str], list[dict]]:
    """The paired verdicts (sentences, rows): [study] compare on the MSE after one step and under
    the tuned rule; span_outside at the end below the start; at sigma > 0 below sigma = 0."""
    runs = _by_seed(jobs, results)
    seeds = range(study["seeds"])
    notes, rows = [], []
    cells = sorted({(j["noise"], j["K"]) for j in jobs})
    for noise, K in cells:
        for pair in study.get("compare", []):
            a, b = pair["a"], pair["b"]
            said = []
            for key, what in (("mse_1", "after one step"), ("tuned", "tuned rule")):
                d = [runs[(noise, K, a, s)][key] - runs[(noise, K, b, s)][key] for s in seeds
                     if (noise, K, a, s) in runs and (noise, K, b, s) in runs
                     and None not in (runs[(noise, K, a, s)][key], runs[(noise, K, b, s)][key])]
                v = _paired(d)
                rows.append({"noise": noise, "K": K, "claim": f"{a} < {b}", "measure": key, **v.as_dict()})
                said.append(f"{what} {v.text()}")
            notes.append(f"sigma = {noise:g}, K = {K}: is {a}'s MSE lower than {b}'s? " + "; ".join(said) + ".")
    for method in study["methods"]:
        for noise, K in cells:
            d = [runs[(noise, K, method, s)]["span_end"] - runs[(noise, K, method, s)]["span_start"] for s in seeds
                 if (noise, K, method, s) in runs]
            if not d or all(x == 0 for x in d):
                continue
            v = _paired(d)
            rows.append({"noise": noise, "K": K, "claim": f"{method}: span_outside end < start", "measure": "span",
                         **v.as_dict()})
    for method in study["methods"]:
        for noise, K in cells:
            if noise == 0 or not any(k[:3] == (0.0, K, method) for k in runs):
                continue
            d = [runs[(noise, K, method, s)]["span_end"] - runs[(0.0, K, method, s)]["span_end"] for s in seeds
                 if (noise, K, method, s) in runs and (0.0, K, method, s) in runs]
            v = _paired(d)
            rows.append({"noise": noise, "K": K, "claim": f"{method}: span_outside at sigma={noise:g} < at sigma=0",
                         "measure": "span", **v.as_dict()})
    return notes, rows


def long_verdicts(long: list[tuple[dict, dict]], mid: int) -> tuple[list[str], list[dict]]:
    """The long runs: per method and noise level, span_outside and the R^2 of (sin, cos) at the
    start, at step `mid` (the table's steps) and at the end (mean over seeds), and the paired
    verdict on "span_outside at the end is lower than at step `mid`"."""
    notes, rows = [], []
    for method in sorted({j["method"] for j, _ in long}):
        for noise in sorted({j["noise"] for j, _ in long}):
            runs = [r for j, r in long if (j["method"], j["noise"]) == (method, noise) and r["status"] == "completed"]
            if not runs:
                continue
            at = [next((row for row in r["curve"] if row["step"] >= mid), r["curve"][-1]) for r in runs]
            v = _paired([r["span_end"] - a["span_outside"] for r, a in zip(runs, at)])
            rows.append({"noise": noise, "K": long[0][0]["K"], "claim": f"{method} long: span_outside end < at step "
                         f"{mid}", "measure": "long", **v.as_dict()})
            notes.append(f"long runs, {method}, sigma = {noise:g}, K = {long[0][0]['K']}: span_outside "
                         f"{fmt(np.mean([r['span_start'] for r in runs]))} (step 0) -> "
                         f"{fmt(np.mean([a['span_outside'] for a in at]))} (step {mid}) -> "
                         f"{fmt(np.mean([r['span_end'] for r in runs]))} (step {runs[0]['steps']}); R^2 of (sin, cos) "
                         f"{fmt(np.mean([r['r2_end'] for r in runs]), 4)} at the end; tuned MSE "
                         f"{fmt(np.mean([r['tuned'] for r in runs]))}; lower at the end than at step {mid}? "
                         f"{v.text()}.")
    return notes, rows


def span_notes(vrows: list[dict]) -> list[str]:
    """The span verdicts in sentences, one per claim and K."""
    out = []
    for r in vrows:
        if r["measure"] != "span":
            continue
        out.append(f"sigma = {r['noise']:g}, K = {r['K']}: {r['claim']}? {fmt(r['mean'])} +- {fmt(r['se'], 2)} "
                   f"(95% CI [{fmt(r['low'])}, {fmt(r['high'])}], {r['n']} seeds): {r['verdict']}.")
    return out


def correlation_notes(jobs: list[dict], results: list[dict]) -> list[str]:
    """Per (sigma, K): Pearson's r between the final span_outside and the tuned MSE over the
    trained runs (every iterative method and seed): does less energy outside the span go with a
    lower test MSE? (correlation across methods and seeds, not a causal test)"""
    out = []
    for noise, K in sorted({(j["noise"], j["K"]) for j in jobs}):
        pairs = [(r["span_end"], r["tuned"]) for j, r in zip(jobs, results)
                 if (j["noise"], j["K"]) == (noise, K) and r["status"] == "completed" and r["steps"] > 0
                 and r["span_end"] is not None and r["tuned"] is not None]
        if len(pairs) < 3:
            continue
        x, y = np.array(pairs).T
        r = float(np.corrcoef(x, y)[0, 1])
        out.append(f"sigma = {noise:g}, K = {K}: Pearson r(final span_outside, tuned MSE) = {fmt(r, 2)} over "
                   f"{len(pairs)} trained runs.")
    return out


def _ms(r: dict | None, key: str) -> str:
    return "-" if r is None or r.get(key) is None else f"{fmt(r[key])} +- {fmt(r.get(f'{key}_se'), 2)}"


def render(rows: list[dict], notes: list[str], header: str, quotes: list[dict] | None = None) -> str:
    table = markdown_table(
        ("sigma", "K", "method", "adapts", "MSE 0 steps", "MSE 1 step", "MSE 10 steps", "MSE tuned rule (chosen)",
         "span_outside start -> end", "R^2 of (sin, cos) start -> end", "eff. rank", "runs"),
        [(f"{r['noise']:g}", r["K"], r["method"], r["adapts"], _ms(r, "mse_0"), _ms(r, "mse_1"), _ms(r, "mse_10"),
          f"{_ms(r, 'tuned')} ({r['tuned_rules']})" if r.get("tuned") is not None else "-",
          f"{fmt(r.get('span_start'))} -> {fmt(r.get('span_end'))}" if r.get("span_end") is not None else "-",
          f"{fmt(r.get('r2_start'), 4)} -> {fmt(r.get('r2_end'), 4)}" if r.get("r2_end") is not None else "-",
          fmt(r.get("effective_rank")), f"{r['completed']}/{r['seeds']}") for r in rows])
    return (f"# Sinusoid regression (MAML's benchmark)\n\n{header}\n\nMSE against the noiseless sine at 100 new "
            f"points per task, mean +- s.e. over seeds (each seed: 1000 new tasks).\n\n{table}\n"
            + (published_table(rows, quotes) + "\n" if quotes else "") + "## Findings\n\n"
            + "\n".join(f"- {n}" for n in notes) + "\n\n![adapted tasks and unlearning curves](sinusoid.png)\n")


def run(out: Path, *, quick: bool = False, workers: int = 2, experiments=None,
        echo: Callable[[str], None] = print) -> list[dict]:
    """Run the grid into `out` (sinusoid.md, .csv, _seeds.csv, _curves.csv, _verdicts.csv, .png)."""
    from metarep.reproduce.sinusoid_plot import plot

    data, study = load(quick=quick, experiments=experiments)
    quotes = load_published(experiments_dir(experiments) / "sinusoid" / "published.toml")
    jobs = make_jobs(data, study)
    start = time.perf_counter()
    header = f"{machine_line(workers)}; settings experiments/sinusoid/base.toml{' (--quick)' if quick else ''}."
    cost = {m: get_method(m, "mlp").relative_cost for m in study["methods"]}
    results = parallel_map(run_job, jobs, workers=workers,
                           costs=[1 + cost[j["method"]] * j["config"]["train"]["steps"] / 1000 for j in jobs],
                           on_done=lambda i, r, s: echo(f"  sigma {jobs[i]['noise']:g}, K {jobs[i]['K']}, "
                                                        f"{jobs[i]['method']}, seed {jobs[i]['seed']}: "
                                                        f"{r['status']} ({s:.0f} s)"))
    wall = time.perf_counter() - start
    long = [(j, r) for j, r in zip(jobs, results) if j["kind"] == "long"]
    table = [i for i, j in enumerate(jobs) if j["kind"] == "table"]
    jobs, results = [jobs[i] for i in table], [results[i] for i in table]
    rows = aggregate(jobs, results)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "sinusoid.csv", rows)
    write_csv(out / "sinusoid_seeds.csv", [{**{k: j.get(k) for k in SEED_COLUMNS}, **{
        k: r.get(k) for k in SEED_COLUMNS if k in r}} for j, r in zip(jobs, results)], SEED_COLUMNS)
    write_csv(out / "sinusoid_curves.csv", [{"noise": j["noise"], "K": j["K"], "method": j["method"],
                                             "seed": j["seed"], **row} for j, r in zip(jobs, results)
                                            for row in r["curve"]])
    notes, vrows = verdicts(jobs, results, study)
    write_csv(out / "sinusoid_long_curves.csv", [{"noise": j["noise"], "K": j["K"], "method": j["method"],
                                                  "seed": j["seed"], **row} for j, r in long for row in r["curve"]])
    long_notes, long_rows = long_verdicts(long, data["train"]["steps"])
    vrows += long_rows
    write_csv(out / "sinusoid_verdicts.csv", vrows,
              ("noise", "K", "claim", "measure", "n", "mean", "se", "low", "high", "verdict"))
    plot(out / "sinusoid.png", jobs, results, study, long=long, quick=quick)
    step_ms = {m: _mean_se(1e3 * r["train_s"] / r["steps"] for j, r in zip(jobs, results)
                           if j["method"] == m and r["steps"])[0] for m in study["methods"]}
    timing = ("CPU time per outer step (training time / steps, mean over runs): "
              + ", ".join(f"{m} {fmt(v, 2)} ms" for m, v in step_ms.items() if np.isfinite(v))
              + f"; test (both protocols) {fmt(_mean_se(r['eval_s'] for r in results)[0], 2)} s per run.")
    header += f" Wall time {wall:.0f} s. {timing}"
    notes = notes + span_notes(vrows) + long_notes + correlation_notes(jobs, results)
    write_text(out / "sinusoid.md", render(rows, notes, header, quotes))
    echo(f"wrote {out / 'sinusoid.md'} ({wall:.0f} s)")
    return rows
