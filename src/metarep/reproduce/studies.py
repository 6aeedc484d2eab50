"""Studies the paper leaves open, one command each (`metarep reproduce <name>`):

- tasks:   test excess risk against the number of training tasks N, next to infinite tasks;
- adapt:   test excess risk against the number of test-time gradient steps, and ridge / least
           squares on the learned features;
- moments: non-zero head mean and non-diagonal Sigma*: do Lambda_t -> Lambda*, B_t w_t -> B* mu*
           and the unlearning of B*_perp still hold?
- rates:   the unlearning rate of perp_norm^2 against alpha, beta and m_in, fitted on the late
           phase and compared with Lemma 2.

Settings: experiments/studies/<name>.toml. Each writes <name>.csv, <name>.png and <name>.md.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from metarep.config import validate
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
    write_text,
)
from metarep.reproduce.figure1 import late_slope
from metarep.theory import lambda_star, lemma2_asymptote, lemma2_rate


def _echo_done(echo, jobs, name):
    def done(i, result, seconds):
        echo(f"  {name}: {jobs[i].get('tag', i)} done in {seconds:.1f} s")
    return done


def _save(fig, out: Path, name: str) -> None:
    from metarep.plots import save_figure

    save_figure(fig, out / f"{name}.png", formats=("png",))


def _header(title: str, quick: bool, wall: float, workers: int, machine: str, spec: str) -> list[str]:
    return [f"# {title}{' (quick run)' if quick else ''}", "",
            f"Settings: `experiments/studies/{spec}.toml`. Wall time {wall:.1f} s ({machine}).", "",
            f"![{spec}]({spec}.png)", ""]


# ----------------------------------------------------------------------------------------
# Jobs run in worker processes
# ----------------------------------------------------------------------------------------

def run_config_job(job: dict) -> dict:
    """runner.run on one config: the summary's test risk and final norms."""
    from metarep.runner import run

    _, _, s = run(validate(job["config"]))
    return {"status": s["status"], **_final(s)}


def population_job(job: dict) -> list[dict]:
    """A batched exact population run; per config its final numbers and (optionally) history."""
    configs = [validate(c) for c in job["configs"]]
    runs = population_batch(configs, points=job.get("points"), evaluate_test=job.get("test", True))
    out = []
    for exp, state, s in runs:
        item = {"status": s["status"], **_final(s)}
        if job.get("points") is not None:
            item["history"] = state.history
        if job.get("lambda_mstar"):
            lam_m = lambda_star(exp.problem.M_star, exp.problem.noise_std, exp.config.train.alpha,
                                _m_in(exp.config))
            from metarep.metrics import lambda_rel_err

            item["lambda_rel_err_mstar"] = float(lambda_rel_err(state.params.B, exp.problem.B_star, lam_m))
        out.append(item)
    return out


def adapt_job(job: dict) -> list[dict]:
    """Train one model (a population batch over seeds, or one finite run), then evaluate it with
    every test-time rule of the study on the same test tasks."""
    from metarep.runner import build, evaluate, initial_state, train

    configs = [validate(c) for c in job["configs"]]
    if job["batch"]:
        trained = [(exp, state) for exp, state, _ in population_batch(configs, evaluate_test=False)]
    else:
        trained = []
        for c in configs:
            exp = build(c)
            trained.append((exp, train(exp, initial_state(exp))))
    rows = []
    for (exp, state), data in zip(trained, job["configs"]):
        for rule in job["rules"]:
            item = {"model": job["model"], "seed": exp.config.problem.seed, **rule, "status": state.status,
                    "excess_risk": None, "excess_risk_se": None, "perp_norm": state.history[-1]["perp_norm"]}
            if state.status == "completed":
                cfg = validate(deep_merge(data, {"test": rule["test"]}))
                r = evaluate(dataclasses.replace(exp, config=cfg), state.params)
                item.update(excess_risk=r["excess_risk"], excess_risk_se=r["excess_risk_se"])
            rows.append(item)
    return rows


def _m_in(config):
    return float("inf") if config.train.m_in == "inf" else config.train.m_in


def _final(s: dict) -> dict:
    f, t = s["final"], s["test"] or {}
    return {"excess_risk": t.get("excess_risk"), "excess_risk_se": t.get("excess_risk_se"),
            "perp_norm": f["perp_norm"], "align_norm": f["align_norm"], "mean_norm": f["mean_norm"],
            "lambda_rel_err": f["lambda_rel_err"], "rank": f["rank"]}


# ----------------------------------------------------------------------------------------
# (a) tasks: excess risk against N
# ----------------------------------------------------------------------------------------

def tasks_study(out: Path, *, quick=False, workers=2, experiments=None, echo: Callable = print) -> dict:
    start = time.perf_counter()
    machine = machine_line(workers)
    data, study = load_study("tasks", quick=quick, experiments=experiments)
    Ns, seeds = [int(n) for n in study["tasks"]], list(range(int(study.get("seeds", 3))))
    jobs, costs = [], []
    for n in Ns:
        for s in seeds:
            cfg = with_seed(deep_merge(data, {"train": {"tasks": n}}), s)
            jobs.append({"config": cfg, "tag": f"N={n} seed {s}"})
            costs.append(float(n))
    inf_cfgs = [with_seed(deep_merge(data, {"train": {"tasks": "inf"}}), s) for s in seeds]
    oracle = [with_seed(deep_merge(data, {"train": {"method": "oracle"}, "test": {"adapt": "bayes"}}), s)
              for s in seeds]
    all_jobs = jobs + [{"configs": inf_cfgs, "tag": "infinite tasks"}] + [{"config": c, "tag": "oracle"}
                                                                         for c in oracle]
    costs = costs + [1.0, 0.0] + [0.0] * (len(oracle) - 1)
    echo(f"tasks: {len(Ns)} values of N x {len(seeds)} seeds, plus infinite tasks, on {workers} worker(s)")
    results = parallel_map(_tasks_dispatch, all_jobs, workers=workers, costs=costs,
                           on_done=_echo_done(echo, all_jobs, "tasks"))
    finite, inf, orc = results[:len(jobs)], results[len(jobs)], results[len(jobs) + 1:]
    rows = []
    for i, n in enumerate(Ns):
        mine = [finite[i * len(seeds) + j] for j in range(len(seeds))]
        rows.append(_agg(f"{n}", n, mine))
    rows.append(_agg("inf", float("inf"), inf))
    rows.append({**_agg("oracle", float("nan"), orc), "perp_norm_mean": None, "perp_norm_std": None,
                 "align_norm_mean": None, "lambda_rel_err_mean": None})
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "tasks.csv", rows, ("N", "seeds", "completed", "excess_risk_mean", "excess_risk_std",
                                        "perp_norm_mean", "perp_norm_std", "align_norm_mean", "lambda_rel_err_mean"))
    _tasks_plot(rows, out)
    cfg = validate(with_seed(data, 0))
    wall = time.perf_counter() - start
    fin = [r for r in rows if r["N"] not in ("inf", "oracle") and r["completed"]]
    inf_row, orc_row = rows[-2], rows[-1]
    notes = []
    if fin:
        best = min(fin, key=lambda r: r["excess_risk_mean"])
        big = fin[-1]
        gap = big["excess_risk_mean"] - inf_row["excess_risk_mean"]
        notes.append(f"The risk falls from {fmt(fin[0]['excess_risk_mean'])} at N = {fin[0]['N']} to "
                     f"{fmt(big['excess_risk_mean'])} at N = {big['N']} (lowest {fmt(best['excess_risk_mean'])} at "
                     f"N = {best['N']}); infinite tasks give {fmt(inf_row['excess_risk_mean'])} after the same "
                     f"{cfg.train.steps} steps, {'a gap of ' + fmt(gap) if gap > 0 else 'no higher'} at the largest N; "
                     f"the oracle gives {fmt(orc_row['excess_risk_mean'])}.")
        notes.append(f"Final perp_norm falls from {fmt(fin[0]['perp_norm_mean'])} (N = {fin[0]['N']}) to "
                     f"{fmt(big['perp_norm_mean'])} (N = {big['N']}) against {fmt(inf_row['perp_norm_mean'])} "
                     f"with infinite tasks after the same steps.")
        inf_sq = inf_row["perp_norm_mean"] ** 2
        large = [r for r in fin if r["value"] >= 1000 and r["perp_norm_mean"] ** 2 > inf_sq]
        if len(large) >= 3 and np.isfinite(inf_sq):
            slope = np.polyfit(np.log([r["value"] for r in large]),
                               np.log([r["perp_norm_mean"] ** 2 - inf_sq for r in large]), 1)[0]
            notes.append(f"For N >= 1000 the excess of perp_norm^2 over the infinite-task value decays as "
                         f"N^{fmt(slope, 2)} (log-log fit over {len(large)} values of N).")
    for r in rows[:-2]:
        if r["completed"] < r["seeds"]:
            notes.append(f"N = {r['N']}: {r['seeds'] - r['completed']} of {r['seeds']} seeds diverged "
                         f"(beta = {cfg.train.beta}; full-batch steps over so few tasks).")
    text = "\n".join(_header("Excess risk against the number of training tasks N", quick, wall, workers, machine,
                             "tasks") + [
        f"FO-ANIL, d = {cfg.problem.d} (smaller than the table's 50 so that N = 10^5 tasks fit in memory and time), "
        f"k = {cfg.problem.k}, k' = {cfg.model.width}, m_in = {cfg.train.m_in}, m_out = {cfg.train.m_out}, "
        f"alpha = {cfg.train.alpha}, beta = {cfg.train.beta}, {cfg.train.steps} full-batch steps for every N "
        f"(and for infinite tasks, the exact population dynamics), one test gradient step on m_test = "
        f"{cfg.test.m_test}; mean +- std over {len(seeds)} seeds.", "",
        markdown_table(["N", "seeds completed", "excess risk", "perp_norm", "lambda_rel_err"],
                       [[r["N"], f"{r['completed']}/{r['seeds']}",
                         f"{fmt(r['excess_risk_mean'])} +- {fmt(r['excess_risk_std'], 2)}" if r["completed"]
                         else "diverged", fmt(r["perp_norm_mean"]), fmt(r["lambda_rel_err_mean"])] for r in rows]),
        "## Findings (measured)", ""] + [f"- {n}" for n in notes] + [""])
    write_text(out / "tasks.md", text)
    echo(text)
    return {"rows": rows, "wall_s": wall}


def _tasks_dispatch(job):
    if "configs" in job:
        return population_job(job)
    return [run_config_job(job)]


def _agg(name, value, items) -> dict:
    items = [x for batch in items for x in (batch if isinstance(batch, list) else [batch])]
    done = [x for x in items if x["status"] == "completed"]
    risk = mean_std([x["excess_risk"] for x in done])
    perp = mean_std([x["perp_norm"] for x in done])
    return {"N": name, "value": value, "seeds": len(items), "completed": len(done), "excess_risk_mean": risk[0],
            "excess_risk_std": risk[1], "perp_norm_mean": perp[0], "perp_norm_std": perp[1],
            "align_norm_mean": mean_std([x["align_norm"] for x in done])[0],
            "lambda_rel_err_mean": mean_std([x["lambda_rel_err"] for x in done])[0]}


def _tasks_plot(rows, out):
    import matplotlib.pyplot as plt

    fin = [r for r in rows if r["N"] not in ("inf", "oracle") and r["completed"]]
    inf_row, orc_row = rows[-2], rows[-1]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    x = [r["value"] for r in fin]
    ax.errorbar(x, [r["excess_risk_mean"] for r in fin], yerr=[_nz(r["excess_risk_std"]) for r in fin],
                marker="o", capsize=3, label="FO-ANIL, N tasks")
    ax.axhline(inf_row["excess_risk_mean"], ls="--", c="C1", label="FO-ANIL, infinite tasks (same steps)")
    ax.axhline(orc_row["excess_risk_mean"], ls=":", c="gray", label="oracle (known B*, Bayes head)")
    ax.set(xscale="log", xlabel="training tasks N", ylabel="test excess risk", title="excess risk after one step")
    ax.legend(fontsize=8)
    ax2.errorbar(x, [r["perp_norm_mean"] for r in fin], yerr=[_nz(r["perp_norm_std"]) for r in fin], marker="o",
                 capsize=3, label="FO-ANIL, N tasks")
    ax2.axhline(inf_row["perp_norm_mean"], ls="--", c="C1", label="infinite tasks")
    ax2.set(xscale="log", yscale="log", xlabel="training tasks N", title=r"final $\|P_\perp B\|_2$")
    ax2.legend(fontsize=8)
    _save(fig, out, "tasks")


def _nz(x):
    return 0.0 if x is None or not np.isfinite(x) else x


# ----------------------------------------------------------------------------------------
# (b) adapt: test-time adaptation
# ----------------------------------------------------------------------------------------

def adapt_study(out: Path, *, quick=False, workers=2, experiments=None, echo: Callable = print) -> dict:
    start = time.perf_counter()
    machine = machine_line(workers)
    data, study = load_study("adapt", quick=quick, experiments=experiments)
    seeds = list(range(int(study.get("seeds", 3))))
    rules = [{"rule": "gradient", "param": s, "test": {"adapt": "gradient", "adapt_steps": int(s)}}
             for s in study["gradient_steps"]]
    rules += [{"rule": "ridge", "param": lam, "test": {"adapt": "ridge", "ridge": float(lam)}} for lam in study["ridge"]]
    rules += [{"rule": "lstsq", "param": None, "test": {"adapt": "lstsq"}}]
    jobs, costs = [], []
    for model in study["models"]:
        cfgs = [with_seed(deep_merge(data, {k: v for k, v in model.items() if k in ("train", "model", "test")}), s)
                for s in seeds]
        batch = validate(cfgs[0]).train.tasks == "inf"
        if batch:
            jobs.append({"model": model["key"], "configs": cfgs, "batch": True, "rules": rules, "tag": model["key"]})
            costs.append(1.0)
        else:
            for s, c in zip(seeds, cfgs):
                jobs.append({"model": model["key"], "configs": [c], "batch": False, "rules": rules,
                             "tag": f"{model['key']} seed {s}"})
                costs.append(10.0)
    oracle = [with_seed(deep_merge(data, {"train": {"method": "oracle"}, "test": {"adapt": "bayes"}}), s)
              for s in seeds]
    jobs += [{"config": c, "tag": "oracle"} for c in oracle]
    costs += [0.0] * len(oracle)
    echo(f"adapt: {len(study['models'])} trained models x {len(seeds)} seeds x {len(rules)} test rules")
    results = parallel_map(_adapt_dispatch, jobs, workers=workers, costs=costs, on_done=_echo_done(echo, jobs, "adapt"))
    flat = [r for batch in results[:len(jobs) - len(oracle)] for r in batch]
    orc = mean_std([r[0]["excess_risk"] for r in results[len(jobs) - len(oracle):]])
    labels = {m["key"]: m.get("label", m["key"]) for m in study["models"]}
    rows = []
    for model in study["models"]:
        for rule in rules:
            mine = [r for r in flat if r["model"] == model["key"] and r["rule"] == rule["rule"]
                    and r["param"] == rule["param"] and r["status"] == "completed"]
            risk = mean_std([r["excess_risk"] for r in mine])
            rows.append({"model": model["key"], "label": labels[model["key"]], "rule": rule["rule"],
                         "param": rule["param"], "seeds": len(mine), "excess_risk_mean": risk[0],
                         "excess_risk_std": risk[1],
                         "excess_risk_se_mean": mean_std([r["excess_risk_se"] for r in mine])[0],
                         "perp_norm_mean": mean_std([r["perp_norm"] for r in mine])[0]})
    rows.append({"model": "oracle", "label": "oracle (known B*)", "rule": "bayes", "param": None, "seeds": len(seeds),
                 "excess_risk_mean": orc[0], "excess_risk_std": orc[1]})
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "adapt.csv", rows, ("model", "label", "rule", "param", "seeds", "excess_risk_mean",
                                        "excess_risk_std", "excess_risk_se_mean", "perp_norm_mean"))
    _adapt_plot(rows, study, labels, out)
    cfg = validate(with_seed(data, 0))
    wall = time.perf_counter() - start
    notes = []
    for key, label in labels.items():
        mine = [r for r in rows if r["model"] == key and np.isfinite(r["excess_risk_mean"])]
        grad = [r for r in mine if r["rule"] == "gradient"]
        if not grad:
            continue
        one = next((r for r in grad if r["param"] == 1), grad[0])
        best = min(grad, key=lambda r: r["excess_risk_mean"])
        worst_last = grad[-1]
        others = min((r for r in mine if r["rule"] != "gradient"), key=lambda r: r["excess_risk_mean"], default=None)
        line = (f"{label}: one step gives {fmt(one['excess_risk_mean'])}; the best number of steps is "
                f"{best['param']} ({fmt(best['excess_risk_mean'])}); {worst_last['param']} steps give "
                f"{fmt(worst_last['excess_risk_mean'])}")
        if others is not None:
            name = "least squares" if others["rule"] == "lstsq" else f"ridge {others['param']:g}"
            line += f"; the best closed-form head ({name}) gives {fmt(others['excess_risk_mean'])}"
        lstsq = next((r["excess_risk_mean"] for r in mine if r["rule"] == "lstsq"), 0.0)
        if worst_last["excess_risk_mean"] > 100 * max(one["excess_risk_mean"], lstsq):
            line += (f"; with {worst_last['param']} steps of size alpha the head iteration diverges on some test tasks "
                     f"(the mean is dominated by them)")
        notes.append(line + f". (Oracle: {fmt(orc[0])}.)")
    header = ["model", "rule"] + ["risk"]
    body = [[r["label"], f"{r['rule']} {'' if r['param'] is None else r['param']}".strip(),
             f"{fmt(r['excess_risk_mean'])} +- {fmt(r['excess_risk_std'], 2)}"] for r in rows]
    text = "\n".join(_header("Test-time adaptation: gradient steps, ridge and least squares", quick, wall, workers,
                             machine, "adapt") + [
        f"Table setting (d = {cfg.problem.d}, k' = {cfg.model.width}, m_test = {cfg.test.m_test}, "
        f"{cfg.test.tasks} test tasks per seed, {len(seeds)} seeds); gradient steps of size alpha = "
        f"{cfg.test_alpha} on the head from the learned w; ridge / least squares on the features X B.", "",
        markdown_table(header, body), "## Findings (measured)", ""] + [f"- {n}" for n in notes] + [""])
    write_text(out / "adapt.md", text)
    echo(text)
    return {"rows": rows, "wall_s": wall}


def _adapt_dispatch(job):
    if "config" in job:
        return [run_config_job(job)]
    return adapt_job(job)


def _adapt_plot(rows, study, labels, out):
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.4), gridspec_kw={"width_ratios": [3, 2]})
    orc = rows[-1]["excess_risk_mean"]
    closed = [r for r in rows if r["rule"] in ("ridge", "lstsq") and r["model"] == next(iter(labels))]
    names = [("lstsq" if r["rule"] == "lstsq" else f"ridge {r['param']:g}") for r in closed]
    base = [r["excess_risk_mean"] for r in rows if r["rule"] == "gradient" and r["param"] in (0, 1)]
    cap = 10 * max([x for x in base if np.isfinite(x)], default=10.0)
    for i, key in enumerate(labels):
        grad = [r for r in rows if r["model"] == key and r["rule"] == "gradient"]
        xs = np.array([r["param"] for r in grad], dtype=float)
        ys = np.array([r["excess_risk_mean"] for r in grad], dtype=float)
        err = np.array([_nz(r["excess_risk_std"]) for r in grad])
        inside = np.isfinite(ys) & (ys <= cap)
        ax.errorbar(xs[inside], ys[inside], yerr=err[inside], marker="o", ms=4, capsize=2, color=f"C{i}",
                    label=labels[key])
        for x, y in zip(xs[~inside], ys[~inside]):
            ax.plot([x], [cap], marker="^", color=f"C{i}")
            ax.annotate(f"{y:.2g}", (x, cap), textcoords="offset points", xytext=(-28, -12 - 9 * i), fontsize=7,
                        color=f"C{i}")
        cl = [r for r in rows if r["model"] == key and r["rule"] in ("ridge", "lstsq")]
        ax2.plot(range(len(cl)), [r["excess_risk_mean"] for r in cl], marker="s", color=f"C{i}", label=labels[key])
    for a in (ax, ax2):
        a.axhline(orc, ls=":", c="gray", label="oracle (Bayes head on B*)")
        a.set(yscale="log", ylabel="test excess risk")
    ax.set_xscale("symlog", linthresh=1, linscale=0.5)
    ax.set(xlabel="gradient steps on the head at test time (step alpha)", title="gradient adaptation")
    ticks = sorted({int(s) for s in study["gradient_steps"]})
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.set_xlim(left=0)
    ax.set_ylim(top=cap * 1.5)
    ax2.set_xticks(range(len(names)), names, rotation=30)
    ax2.set(title="closed-form heads on X B")
    ax.legend(fontsize=8)
    _save(fig, out, "adapt")


# ----------------------------------------------------------------------------------------
# (c) moments: general mu*, Sigma*
# ----------------------------------------------------------------------------------------

def moments_study(out: Path, *, quick=False, workers=2, experiments=None, echo: Callable = print) -> dict:
    start = time.perf_counter()
    machine = machine_line(workers)
    data, study = load_study("moments", quick=quick, experiments=experiments)
    seeds = list(range(int(study.get("seeds", 3))))
    variants = study["variants"]
    steps = validate(with_seed(data, 0)).train.steps
    points = log_points(steps, int(study.get("points", 80)))
    jobs = []
    for v in variants:
        cfgs = [with_seed(deep_merge(data, {"problem": v.get("problem", {})}), s) for s in seeds]
        jobs.append({"configs": cfgs, "points": points, "lambda_mstar": True, "tag": v["key"]})
    echo(f"moments: {len(variants)} task distributions x {len(seeds)} seeds (exact population dynamics)")
    results = parallel_map(population_job, jobs, workers=workers, costs=[1.0] * len(jobs),
                           on_done=_echo_done(echo, jobs, "moments"))
    rows, curves = [], {}
    for v, runs in zip(variants, results):
        done = [r for r in runs if r["status"] == "completed"]
        h0 = done[0]["history"] if done else []
        curves[v["key"]] = h0
        perp0 = mean_std([r["history"][0]["perp_norm"] for r in done])[0]
        mean0 = mean_std([r["history"][0]["mean_norm"] for r in done])[0]
        slopes = [late_slope([x["step"] for x in r["history"]], [x["perp_norm"] ** 2 for x in r["history"]])
                  for r in done]
        monotone = all(all(b["perp_norm"] <= a["perp_norm"] * (1 + 1e-9) for a, b in
                           zip([x for x in r["history"] if x["step"] >= 100], [x for x in r["history"]
                                                                                if x["step"] >= 100][1:]))
                       for r in done)
        rows.append({"variant": v["key"], "label": v.get("label", v["key"]), "seeds": len(runs), "completed": len(done),
                     "lambda_rel_err": mean_std([r["lambda_rel_err"] for r in done])[0],
                     "lambda_rel_err_mstar": mean_std([r["lambda_rel_err_mstar"] for r in done])[0],
                     "mean_norm_initial": mean0, "mean_norm_final": mean_std([r["mean_norm"] for r in done])[0],
                     "perp_norm_initial": perp0, "perp_norm_final": mean_std([r["perp_norm"] for r in done])[0],
                     "perp_sq_late_slope": mean_std(slopes)[0], "perp_decreasing_after_100": monotone,
                     "excess_risk_mean": mean_std([r["excess_risk"] for r in done])[0],
                     "excess_risk_std": mean_std([r["excess_risk"] for r in done])[1]})
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "moments.csv", rows, list(rows[0]))
    _moments_plot(curves, {v["key"]: v.get("label", v["key"]) for v in variants}, out)
    wall = time.perf_counter() - start
    cfg = validate(with_seed(data, 0))
    notes = []
    for r in rows:
        lam_ok = "holds" if r["lambda_rel_err"] < 0.05 else "does not hold"
        parts = [f"Lambda_t -> Lambda*(Sigma*) {lam_ok} (relative error {fmt(r['lambda_rel_err'])}; with M* = "
                 f"Sigma* + mu* mu*^T in its place {fmt(r['lambda_rel_err_mstar'])})",
                 f"mean_norm {fmt(r['mean_norm_initial'])} -> {fmt(r['mean_norm_final'])}",
                 f"perp_norm {fmt(r['perp_norm_initial'])} -> {fmt(r['perp_norm_final'])}, "
                 f"{'non-increasing' if r['perp_decreasing_after_100'] else 'NOT monotone'} after step 100, late "
                 f"slope of perp_norm^2 {fmt(r['perp_sq_late_slope'])}"]
        notes.append(f"{r['label']}: " + "; ".join(parts) + ".")
    body = [[r["label"], fmt(r["lambda_rel_err"]), fmt(r["lambda_rel_err_mstar"]),
             f"{fmt(r['mean_norm_initial'])} -> {fmt(r['mean_norm_final'])}",
             f"{fmt(r['perp_norm_initial'])} -> {fmt(r['perp_norm_final'])}", fmt(r["perp_sq_late_slope"]),
             f"{fmt(r['excess_risk_mean'])} +- {fmt(r['excess_risk_std'], 2)}"] for r in rows]
    text = "\n".join(_header("Beyond the theory's assumptions: non-zero mu*, non-diagonal Sigma*", quick, wall, workers,
                             machine, "moments") + [
        f"Exact infinite-task FO-ANIL (MATH 4, which holds for any mu*, Sigma*), d = {cfg.problem.d}, "
        f"k' = {cfg.model.width}, m_in = {cfg.train.m_in}, {steps} steps, {len(seeds)} seeds. Lambda* is MATH 5's "
        "formula, derived for mu* = 0; the second column puts M* = Sigma* + mu* mu*^T in Sigma*'s place.", "",
        markdown_table(["task distribution", "Lambda rel. err (Sigma*)", "Lambda rel. err (M*)", "mean_norm",
                        "perp_norm", "late slope perp^2", "excess risk"], body),
        "## Findings (measured)", ""] + [f"- {n}" for n in notes] + [""])
    write_text(out / "moments.md", text)
    echo(text)
    return {"rows": rows, "wall_s": wall}


def _moments_plot(curves, labels, out):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.3))
    for i, (key, hist) in enumerate(curves.items()):
        steps = np.array([r["step"] for r in hist], dtype=float)
        for ax, metric in zip(axes, ("lambda_rel_err", "perp_norm", "mean_norm")):
            ys = np.array([r[metric] for r in hist])
            keep = (steps > 0) & (ys > 0)
            ax.plot(steps[keep], ys[keep], color=f"C{i}", label=labels[key])
    titles = (r"$\|\Lambda_t-\Lambda_\star\|/\|\Lambda_\star\|$", r"$\|P_\perp B_t\|_2$",
              r"$\|B_t w_t - B_\star\mu_\star\|_2$")
    for ax, title in zip(axes, titles):
        ax.set(xscale="log", yscale="log", xlabel="outer step t", title=title)
    axes[0].legend(fontsize=8)
    fig.suptitle("Exact infinite-task FO-ANIL, seed 0")
    _save(fig, out, "moments")


# ----------------------------------------------------------------------------------------
# (d) rates: the unlearning rate against alpha, beta, m_in
# ----------------------------------------------------------------------------------------

def rates_study(out: Path, *, quick=False, workers=2, experiments=None, echo: Callable = print) -> dict:
    start = time.perf_counter()
    machine = machine_line(workers)
    data, study = load_study("rates", quick=quick, experiments=experiments)
    grid = [(float(a), float(b), int(m)) for a in study["alpha"] for b in study["beta"] for m in study["m_in"]]
    base = with_seed(data, int(study.get("seed", 0)))
    cfgs = [deep_merge(base, {"train": {"alpha": a, "beta": b, "m_in": m}}) for a, b, m in grid]
    steps = validate(cfgs[0]).train.steps
    points = log_points(steps, int(study.get("points", 100)))
    window = float(study.get("fit_from", 0.1))
    # Split the grid over the workers: each part is one batched population run.
    parts = max(1, min(workers, len(cfgs)))
    jobs = [{"configs": cfgs[i::parts], "points": points, "test": False, "tag": f"part {i + 1}/{parts}"}
            for i in range(parts)]
    echo(f"rates: {len(grid)} (alpha, beta, m_in) points, {steps} exact population steps, in {parts} batch(es)")
    results = parallel_map(population_job, jobs, workers=workers, costs=[1.0] * parts,
                           on_done=_echo_done(echo, jobs, "rates"))
    runs = [None] * len(cfgs)
    for i, res in enumerate(results):
        for j, r in enumerate(res):
            runs[i + j * parts] = r
    cfg0 = validate(cfgs[0])
    sigma, tr_sigma = cfg0.problem.noise_std, float(np.trace(np.atleast_2d(_cov(cfg0))))
    rows = []
    for (a, b, m), r in zip(grid, runs):
        h = r["history"] if r["status"] == "completed" else []
        st = np.array([x["step"] for x in h], dtype=float)
        x2 = np.array([x["perp_norm"] ** 2 for x in h])
        slope = late_slope(st, x2, start_fraction=window) if h else float("nan")
        c_meas = float(x2[-1] * st[-1]) if h else float("nan")
        c_lemma = 1.0 / lemma2_rate(a, b, sigma, m)
        rows.append({"alpha": a, "beta": b, "m_in": m, "status": r["status"], "perp_sq_initial": float(x2[0]) if h
                     else None, "perp_sq_final": float(x2[-1]) if h else None, "late_slope": slope,
                     "C_measured": c_meas, "C_lemma2": c_lemma, "ratio": c_meas / c_lemma,
                     "lambda_rel_err": r["lambda_rel_err"]})
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "rates.csv", rows, list(rows[0]))
    ok = [r for r in rows if r["status"] == "completed" and np.isfinite(r["C_measured"]) and r["C_measured"] > 0]
    notes = []
    if ok:
        slopes = np.array([r["late_slope"] for r in ok])
        ratios = np.array([r["ratio"] for r in ok])
        notes.append(f"Late-phase slope of log perp_norm^2 against log t (steps >= {window:g} T): median "
                     f"{fmt(np.median(slopes))}, range {fmt(slopes.min())} to {fmt(slopes.max())} over {len(ok)} "
                     f"points (Lemma 2: -1).")
        notes.append(f"Measured constant C = perp_norm^2(T) T against Lemma 2's m_in / (alpha^2 beta sigma^2): ratio "
                     f"median {fmt(np.median(ratios))}, range {fmt(ratios.min())} to {fmt(ratios.max())}"
                     + (" (below 1: the decay is faster than the bound)." if ratios.max() < 1 else "."))
        if len(ok) >= 4:
            X = np.column_stack([np.ones(len(ok)), np.log([r["alpha"] for r in ok]), np.log([r["beta"] for r in ok]),
                                 np.log([r["m_in"] for r in ok])])
            coef = np.linalg.lstsq(X, np.log([r["C_measured"] for r in ok]), rcond=None)[0]
            notes.append(f"Fit C ~ alpha^a beta^b m_in^c over the grid: a = {fmt(coef[1])}, b = {fmt(coef[2])}, "
                         f"c = {fmt(coef[3])} (Lemma 2: -2, -1, 1).")
        notes.append(f"For reference, the population update of MATH 4 restricted to B*_perp shrinks a direction of "
                     f"size s by alpha^2 beta (sigma^2 + tr V) s^3 / m_in, tr V -> tr Sigma* = {fmt(tr_sigma)}: it "
                     f"suggests C ~ m_in / (2 alpha^2 beta (sigma^2 + tr Sigma*)), a ratio of "
                     f"{fmt(sigma ** 2 / (2 * (sigma ** 2 + tr_sigma)))} to Lemma 2's constant.")
    _rates_plot(rows, runs, grid, {**study, "_trace_sigma": tr_sigma}, sigma, out)
    wall = time.perf_counter() - start
    body = [[r["alpha"], r["beta"], r["m_in"], fmt(r["late_slope"]), fmt(r["C_measured"]), fmt(r["C_lemma2"]),
             fmt(r["ratio"])] for r in rows]
    text = "\n".join(_header("Unlearning rate of B*_perp against alpha, beta, m_in", quick, wall, workers, machine,
                             "rates") + [
        f"Exact infinite-task FO-ANIL, d = {cfg0.problem.d}, k = {cfg0.problem.k}, k' = {cfg0.model.width}, "
        f"sigma = {sigma}, init_scale = {cfg0.model.init_scale}, T = {steps} steps, all grid points in batched "
        f"population runs. Slope: log-log least squares of perp_norm^2 over t in [{window:g} T, T]; "
        f"C = perp_norm^2(T) T.", "",
        markdown_table(["alpha", "beta", "m_in", "late slope", "C measured", "C Lemma 2", "ratio"], body),
        "## Findings (measured)", ""] + [f"- {n}" for n in notes] + [""])
    write_text(out / "rates.md", text)
    echo(text)
    return {"rows": rows, "wall_s": wall}


def _cov(config):
    from metarep.problem import as_covariance

    return as_covariance(config.problem.task_cov, config.problem.k)


def _rates_plot(rows, runs, grid, study, sigma, out):
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    a0 = float(study.get("show_alpha", study["alpha"][len(study["alpha"]) // 2]))
    b0 = float(study.get("show_beta", study["beta"][-1]))
    for i, ((a, b, m), r) in enumerate([(g, r) for g, r in zip(grid, runs) if g[0] == a0 and g[1] == b0]):
        if r["status"] != "completed":
            continue
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
    ok = [r for r in rows if r["status"] == "completed" and np.isfinite(r["C_measured"])]
    ms = sorted({r["m_in"] for r in ok})
    for i, m in enumerate(ms):
        sel = [r for r in ok if r["m_in"] == m]
        ax2.scatter([r["C_lemma2"] for r in sel], [r["C_measured"] for r in sel], color=f"C{i}", label=f"m_in = {m}")
    if ok:
        lo = min(min(r["C_lemma2"], r["C_measured"]) for r in ok) / 2
        hi = max(max(r["C_lemma2"], r["C_measured"]) for r in ok) * 2
        ax2.plot([lo, hi], [lo, hi], c="gray", ls=":", label="measured = Lemma 2")
        tr = float(study.get("_trace_sigma", 0.0))
        k = sigma ** 2 / (2 * (sigma ** 2 + tr))
        ax2.plot([lo, hi], [k * lo, k * hi], c="gray", ls="--", lw=1,
                 label=r"$m_{in}/(2\alpha^2\beta(\sigma^2+\mathrm{tr}\,\Sigma_\star))$")
    ax2.set(xscale="log", yscale="log", xlabel=r"Lemma 2: $m_{in}/(\alpha^2\beta\sigma^2)$",
            ylabel=r"measured $\|P_\perp B_T\|_2^2\,T$", title="constant of the 1/t decay")
    ax2.legend(fontsize=8)
    _save(fig, out, "rates")


STUDIES = {"tasks": tasks_study, "adapt": adapt_study, "moments": moments_study, "rates": rates_study}
