"""Study `adapt`: how many gradient steps should a new task take at test time, and how do they
compare with ridge / least squares on the learned features? (The paper leaves it open.)

Settings: experiments/studies/adapt.toml ([study]: the trained models, the test-time rules, the
reference rows, seeds). Each model is trained once per seed and scored with every rule on
validation tasks and on test tasks (independent draws: the library's validation_tasks and
test_tasks streams of test.seed). The number of steps, and the closed-form head, are chosen per
seed by the mean validation risk; the test risk of that choice is what the study reports. The
whole grid on the test tasks is shown for reference only (choosing from it would be optimistic).
Writes adapt.md, adapt.csv, adapt_seeds.csv, adapt_summary.json and adapt.png.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from metarep.config.schema import validate
from metarep.engine import tuning
from metarep.linear.adapt import excess_risk, fit_heads
from metarep.linear.adapt import summarize as mean_se
from metarep.methods.base import shared_head
from metarep.reproduce import protocol, verdict
from metarep.reproduce.common import (
    batchable,
    deep_merge,
    fmt,
    load_study,
    machine_line,
    markdown_table,
    mean_std,
    parallel_map,
    population_batch,
    with_seed,
    write_csv,
)
from metarep.reproduce.jobs import run_config_job
from metarep.reproduce.studies import page

NAME = "adapt"
COLUMNS = ("model", "label", "rule", "param", "seeds", "excess_risk_mean", "excess_risk_std", "excess_risk_se_mean",
           "validation_mean", "perp_norm_mean")
SEED_COLUMNS = ("model", "seed", "status", "one_step", "chosen_steps", "chosen_steps_validation", "chosen_steps_risk",
                "chosen_closed_form", "chosen_closed_form_validation", "chosen_closed_form_risk", "perp_norm")
CLOSED = ("ridge", "lstsq")
SECTIONS = ("problem", "model", "method", "train", "test")


@dataclass(frozen=True)
class Design:
    data: dict
    seeds: list[int]
    models: list[dict]           # key, label and config overrides of each trained model
    rules: list[dict]            # rule, param and the [test] keys of each test-time rule
    references: list[dict]       # rows evaluated once with their own rule (e.g. the oracle)
    validation_tasks: int        # validation tasks per seed (the choice is made on them)

    def config(self, over: dict, seed: int) -> dict:
        return with_seed(deep_merge(self.data, {k: v for k, v in over.items() if k in SECTIONS}), seed)


def design(data: dict, study: dict) -> Design:
    rules = [{"rule": "gradient", "param": int(s), "test": {"adapt": "gradient", "adapt_steps": int(s)}}
             for s in study["gradient_steps"]]
    rules += [{"rule": "ridge", "param": float(lam), "test": {"adapt": "ridge", "ridge": float(lam)}}
              for lam in study["ridge"]]
    rules += [{"rule": "lstsq", "param": None, "test": {"adapt": "lstsq"}}]
    return Design(data, list(range(int(study.get("seeds", 3)))), list(study["models"]), rules,
                  list(study.get("references", [])), int(study.get("validation_tasks", 1000)))


def plan(d: Design) -> tuple[list[dict], list[float]]:
    """A model whose seeds can advance together is one batched job; any other, one job per seed."""
    jobs, costs = [], []
    for model in d.models:
        configs = [d.config(model, s) for s in d.seeds]
        if batchable(validate(configs[0])):
            jobs.append({"kind": "adapt", "model": model["key"], "configs": configs, "batch": True, "rules": d.rules,
                         "validation_tasks": d.validation_tasks, "tag": model["key"]})
            costs.append(1.0)
        else:
            for s, c in zip(d.seeds, configs):
                jobs.append({"kind": "adapt", "model": model["key"], "configs": [c], "batch": False,
                             "rules": d.rules, "validation_tasks": d.validation_tasks,
                             "tag": f"{model['key']} seed {s}"})
                costs.append(10.0)
    for ref in d.references:
        for s in d.seeds:
            jobs.append({"kind": "run", "model": ref["key"], "config": d.config(ref, s),
                         "tag": f"{ref['key']} seed {s}"})
            costs.append(0.0)
    return jobs, costs


def work(job: dict) -> list[dict]:
    return [run_config_job(job)] if job["kind"] == "run" else adapt_job(job)


def _as_rule(rule: dict, config) -> tuning.Rule:
    te = rule["test"]
    return tuning.Rule(te["adapt"], steps=te.get("adapt_steps", 1), alpha=config.test_alpha, ridge=te.get("ridge", 0.0))


def rule_scores(exp, params, rules: list[dict], which: str, n: int) -> np.ndarray:
    """Per-task excess risk (len(rules), n) of every rule on the run's `which` tasks ("validation"
    or "test": the library's validation_tasks / test_tasks streams of test.seed), all rules on the
    same tasks."""
    from metarep.engine.sources import chunked_scores

    config, problem = exp.config, exp.problem
    B, w = params.B, shared_head(params)
    ruled = [_as_rule(r, config) for r in rules]

    def score_chunk(rs, tasks):
        return np.stack([excess_risk(B, fit_heads(r.adapt, B, w, tasks.X_in, tasks.y_in, problem=problem,
                                                  **r.keywords()), problem.B_star, tasks.w_star) for r in rs])

    # a copy, not a validated config: validation_tasks sizes the validation draw here, with no tuning
    sized = config.model_copy(update={"test": config.test.model_copy(update={"validation_tasks": n, "tasks": n})})
    return chunked_scores(problem, ruled, sized, which, tuning.Progress(n), score_chunk)


def adapt_job(job: dict) -> list[dict]:
    """Train one model (a population batch over seeds, or one finite run), then score it with
    every test-time rule of the study on the same validation tasks and the same test tasks."""
    from metarep.engine import build, train

    configs = [validate(c) for c in job["configs"]]
    if job["batch"]:
        trained = [(exp, state) for exp, state, _ in population_batch(configs, evaluate_test=False)]
    else:
        trained = []
        for c in configs:
            exp = build(c)
            trained.append((exp, train(exp, exp.initial_state())))
    rows = []
    for exp, state in trained:
        ok = state.status == "completed"
        if ok:
            val = rule_scores(exp, state.params, job["rules"], "validation", job["validation_tasks"])
            test = rule_scores(exp, state.params, job["rules"], "test", exp.config.test.tasks)
        for i, rule in enumerate(job["rules"]):
            item = {"model": job["model"], "seed": exp.config.problem.seed, "rule": rule["rule"],
                    "param": rule["param"], "status": state.status, "excess_risk": None, "excess_risk_se": None,
                    "validation": None, "perp_norm": state.history[-1]["perp_norm"]}
            if ok:
                t_mean, t_se = mean_se(test[i])
                item.update(excess_risk=t_mean, excess_risk_se=t_se, validation=float(val[i].mean()))
            rows.append(item)
    return rows


def flatten(jobs: list[dict], results: list[list[dict]]) -> list[dict]:
    """Every (model, seed, rule) of the trained models."""
    return [r for job, batch in zip(jobs, results) if job["kind"] == "adapt" for r in batch]


def aggregate(d: Design, jobs: list[dict], results: list[list[dict]]) -> list[dict]:
    """The grid: per model and rule, the test risk over seeds (and the validation risk)."""
    flat = flatten(jobs, results)
    rows = []
    for model in d.models:
        for rule in d.rules:
            mine = [r for r in flat if r["model"] == model["key"] and r["rule"] == rule["rule"]
                    and r["param"] == rule["param"] and r["status"] == "completed"]
            risk = mean_std([r["excess_risk"] for r in mine])
            rows.append({"model": model["key"], "label": model.get("label", model["key"]), "rule": rule["rule"],
                         "param": rule["param"], "seeds": len(mine), "excess_risk_mean": risk[0],
                         "excess_risk_std": risk[1],
                         "excess_risk_se_mean": mean_std([r["excess_risk_se"] for r in mine])[0],
                         "validation_mean": mean_std([r["validation"] for r in mine])[0],
                         "perp_norm_mean": mean_std([r["perp_norm"] for r in mine])[0]})
    for ref in d.references:
        mine = [b[0] for job, b in zip(jobs, results) if job["kind"] == "run" and job["model"] == ref["key"]]
        risk = mean_std([r["excess_risk"] for r in mine if r["status"] == "completed"])
        rows.append({"model": ref["key"], "label": ref.get("label", ref["key"]), "rule": "reference", "param": None,
                     "seeds": len(mine), "excess_risk_mean": risk[0], "excess_risk_std": risk[1]})
    return rows


def _pick(rules: list[dict]) -> dict | None:
    """The rule with the lowest validation risk (finite), or None."""
    finite = [r for r in rules if r["validation"] is not None and np.isfinite(r["validation"])]
    return min(finite, key=lambda r: r["validation"]) if finite else None


def choices(d: Design, flat: list[dict]) -> list[dict]:
    """Per model and seed: the one-step test risk, and the number of steps and the closed-form
    head chosen on the validation tasks with the test risk of each choice."""
    out = []
    for model in d.models:
        for seed in d.seeds:
            mine = [r for r in flat if r["model"] == model["key"] and r["seed"] == seed]
            if not mine:
                continue
            row = {"model": model["key"], "seed": seed, "status": mine[0]["status"], "perp_norm": mine[0]["perp_norm"]}
            if mine[0]["status"] == "completed":
                grad = [r for r in mine if r["rule"] == "gradient"]
                steps, closed = _pick(grad), _pick([r for r in mine if r["rule"] in CLOSED])
                row["one_step"] = next((r["excess_risk"] for r in grad if r["param"] == 1), None)
                for key, pick in (("chosen_steps", steps), ("chosen_closed_form", closed)):
                    if pick is not None:
                        row[key] = pick["param"] if key == "chosen_steps" else _rule_name(pick)
                        row[f"{key}_validation"], row[f"{key}_risk"] = pick["validation"], pick["excess_risk"]
            out.append(row)
    return out


def _rule_name(r: dict) -> str:
    if r["rule"] in CLOSED:
        return "least squares" if r["rule"] == "lstsq" else f"ridge {r['param']:g}"
    return f"{r['param']} gradient step{'' if r['param'] == 1 else 's'}"


def _versus(seeds: list[dict], a: str, b: str) -> dict:
    """The verdict on "a is lower than b" over the seeds that have both."""
    both = [(r[a], r[b]) for r in seeds if r.get(a) is not None and r.get(b) is not None]
    return verdict.paired([x - y for x, y in both]).as_dict()


def summarize(d: Design, rows: list[dict], seeds: list[dict]) -> dict:
    """adapt_summary.json: per model the one-step risk, the step count and the closed-form head
    chosen on validation tasks (their test risk, paired verdicts against one step), and for
    reference the grid's best on the test tasks themselves; the reference rows."""
    models = {}
    for model in d.models:
        mine = [r for r in rows if r["model"] == model["key"] and np.isfinite(r["excess_risk_mean"])]
        grad = [r for r in mine if r["rule"] == "gradient"]
        closed = [r for r in mine if r["rule"] in CLOSED]
        per_seed = [r for r in seeds if r["model"] == model["key"] and r["status"] == "completed"]
        if not grad or not per_seed:
            continue
        one = next((r for r in grad if r["param"] == 1), grad[0])
        best = min(grad, key=lambda r: r["excess_risk_mean"])
        best_closed = min(closed, key=lambda r: r["excess_risk_mean"], default=None)
        models[model["key"]] = {
            "label": model.get("label", model["key"]), "one_step": one["excess_risk_mean"],
            "chosen_steps": protocol.chosen([str(r.get("chosen_steps")) for r in per_seed]),
            "chosen_steps_risk": _mean(per_seed, "chosen_steps_risk"),
            "chosen_closed_form": protocol.chosen([r.get("chosen_closed_form") for r in per_seed]),
            "chosen_closed_form_risk": _mean(per_seed, "chosen_closed_form_risk"),
            "steps_vs_one": _versus(per_seed, "chosen_steps_risk", "one_step"),
            "closed_form_vs_steps": _versus(per_seed, "chosen_closed_form_risk", "chosen_steps_risk"),
            "most_steps": grad[-1]["param"], "most_steps_risk": grad[-1]["excess_risk_mean"],
            "test_grid_best_steps": best["param"], "test_grid_best_steps_risk": best["excess_risk_mean"],
            "test_grid_best_closed_form": _rule_name(best_closed) if best_closed else None,
            "test_grid_best_closed_form_risk": best_closed["excess_risk_mean"] if best_closed else None}
    refs = {r["model"]: r["excess_risk_mean"] for r in rows if r["rule"] == "reference"}
    return {"seeds": len(d.seeds), "validation_tasks": d.validation_tasks, "models": models, "references": refs}


def _mean(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return float(np.mean(values)) if values else None


def _said(v: dict, unit: str = "seeds") -> str:
    return (f"{fmt(v['mean'])} (95% CI [{fmt(v['low'])}, {fmt(v['high'])}], {v['n']} {unit}): "
            f"{v['verdict']}")


def findings(summary: dict) -> list[str]:
    notes = []
    refs = "; ".join(f"{k}: {fmt(v)}" for k, v in summary["references"].items())
    for m in summary["models"].values():
        line = (f"{m['label']}: one step gives {fmt(m['one_step'])}; the step count chosen on validation tasks "
                f"({m['chosen_steps']}) gives {fmt(m['chosen_steps_risk'])} on the test tasks, paired difference "
                f"with one step {_said(m['steps_vs_one'])}; the closed-form head chosen on validation tasks "
                f"({m['chosen_closed_form']}) gives {fmt(m['chosen_closed_form_risk'])}, paired difference with "
                f"the chosen steps {_said(m['closed_form_vs_steps'])}; {m['most_steps']} steps give "
                f"{fmt(m['most_steps_risk'])}")
        if m["most_steps_risk"] > 100 * m["one_step"]:
            line += (f" (with {m['most_steps']} steps of size alpha the head iteration diverges on some test tasks, "
                     "which dominate the mean)")
        notes.append(line + (f". (References: {refs}.)" if refs else "."))
    return notes


def render(d: Design, rows: list[dict], seeds: list[dict], notes: list[str], *, quick: bool, wall: float,
           machine: str) -> str:
    cfg = validate(with_seed(d.data, 0))
    chosen = [[r["model"], r["seed"], fmt(r.get("one_step")), r.get("chosen_steps", "-"),
               fmt(r.get("chosen_steps_risk")), r.get("chosen_closed_form", "-"), fmt(r.get("chosen_closed_form_risk"))]
              for r in seeds]
    body = [[r["label"], r["rule"] if r["rule"] == "reference" else _rule_name(r),
             fmt(r.get("validation_mean")), f"{fmt(r['excess_risk_mean'])} +- {fmt(r['excess_risk_std'], 2)}"]
            for r in rows]
    lines = page.header("Test-time adaptation: gradient steps, ridge and least squares", NAME, quick=quick,
                        wall=wall, machine=machine) + [
        f"Table setting (d = {cfg.problem.d}, k' = {cfg.model.width}, m_test = {cfg.test.m_test}, "
        f"{cfg.test.tasks} test tasks and {d.validation_tasks} validation tasks per seed, {len(d.seeds)} seeds); "
        f"gradient steps of size alpha = {cfg.test_alpha} on the head from the learned w; ridge / least squares on "
        "the features X B. The step count and the closed-form head are chosen per seed by the mean risk on the "
        "validation tasks; the test risk of the choice is reported.", "",
        "## Chosen on validation tasks, scored on test tasks", "",
        markdown_table(["model", "seed", "1 step", "steps chosen", "test risk", "closed form chosen", "test risk"],
                       chosen),
        "## The whole grid (for reference: reading the best off the test column would be optimistic)", "",
        markdown_table(["model", "rule", "validation risk", "test risk (mean +- std over seeds)"], body)]
    return "\n".join(lines + page.findings_block(notes))


def draw(d: Design, rows: list[dict], out: Path, *, quick: bool = False) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.9), layout="constrained")
    ax, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    base = [r["excess_risk_mean"] for r in rows if r["rule"] == "gradient" and r["param"] in (0, 1)]
    cap = 10 * max([x for x in base if np.isfinite(x)], default=10.0)
    off = 0
    for i, model in enumerate(d.models):
        off += _draw_model(ax, ax2, [r for r in rows if r["model"] == model["key"]], model.get("label", model["key"]),
                           f"C{i}", cap, i, len(d.models))
    for j, r in enumerate(r for r in rows if r["rule"] == "reference"):
        for a in (ax, ax2):
            a.axhline(r["excess_risk_mean"], ls=":", c="gray" if j == 0 else f"C{j + 5}", label=r["label"])
    _axes(ax, ax2, d, cap, off)
    cfg = validate(with_seed(d.data, 0))
    fig.suptitle(f"Test-time adaptation: d = {cfg.problem.d}, k' = {cfg.model.width}, m_test = {cfg.test.m_test}, "
                 f"{cfg.test.tasks} test tasks, {len(d.seeds)} seeds, mean ± std over seeds"
                 + ("\n--quick: fewer steps and tasks, not the study's setting" if quick else ""))
    page.save_png(fig, out, NAME)


OFF_SCALE = 3.0  # the band above the cap, as a factor of it, where off-scale values are marked


def _axes(ax, ax2, d: Design, cap: float, off: int) -> None:
    from matplotlib.ticker import FuncFormatter

    from metarep.plots import tick_text

    for a in (ax, ax2):
        a.set(yscale="log", ylabel="test excess risk")
        a.yaxis.set_major_formatter(FuncFormatter(tick_text))
    ax.set_xscale("symlog", linthresh=1, linscale=0.5)
    ticks = sorted({r["param"] for r in d.rules if r["rule"] == "gradient"})
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.set(xlabel="gradient steps on the head at test time (step alpha)", title="gradient adaptation")
    ax.set_xlim(left=-0.1, right=max(ticks) * 1.6)
    if off:
        ax.axhspan(cap, cap * OFF_SCALE, color="0.92", zorder=0)
        ax.text(0.01, cap * OFF_SCALE ** 0.9, f"off scale (> {cap:.3g}): the mean printed", fontsize=7,
                va="top", color="0.3")
        ax.set_ylim(top=cap * OFF_SCALE)
    else:
        ax.set_ylim(top=cap * 1.5)
    closed = [r for r in d.rules if r["rule"] in ("ridge", "lstsq")]
    ax2.set_xticks(range(len(closed)), [_rule_name(r) for r in closed], rotation=30)
    ax2.set(title="closed-form heads on X B")
    ax.legend(fontsize=8, loc="center right")


def _draw_model(ax, ax2, mine: list[dict], label: str, color: str, cap: float, i: int, n: int) -> int:
    """One model's gradient-step curve and its closed-form heads. A mean above `cap` (a run-away
    adaptation) is marked in the band above the cap, printed, each model at its own height;
    returns how many were."""
    grad = [r for r in mine if r["rule"] == "gradient"]
    xs = np.array([r["param"] for r in grad], dtype=float)
    ys = np.array([r["excess_risk_mean"] for r in grad], dtype=float)
    err = np.array([page.finite_or_zero(r["excess_risk_std"]) for r in grad])
    inside = np.isfinite(ys) & (ys <= cap)
    ax.errorbar(xs[inside], ys[inside], yerr=err[inside], marker="o", ms=4, capsize=2, color=color, label=label)
    height = cap * OFF_SCALE ** ((i + 1) / (n + 1))
    for x, y in zip(xs[~inside], ys[~inside]):
        ax.plot([x], [height], marker="^", color=color, ls="none")
        ax.annotate(f"{y:.2g}" if np.isfinite(y) else "not finite", (x, height), textcoords="offset points",
                    xytext=(6, -3), fontsize=7, color=color)
    closed = [r for r in mine if r["rule"] in ("ridge", "lstsq")]
    ax2.plot(range(len(closed)), [r["excess_risk_mean"] for r in closed], marker="s", color=color, label=label)
    return int((~inside).sum())


def run(out: Path, *, quick: bool = False, workers: int = 2, experiments=None,
        echo: Callable[[str], None] = print) -> dict:
    start = time.perf_counter()
    machine = machine_line(workers)
    d = design(*load_study(NAME, quick=quick, experiments=experiments))
    jobs, costs = plan(d)
    echo(f"{NAME}: {len(d.models)} trained models x {len(d.seeds)} seeds x {len(d.rules)} test rules")
    results = parallel_map(work, jobs, workers=workers, costs=costs, on_done=page.echo_done(echo, jobs, NAME))
    rows = aggregate(d, jobs, results)
    seeds = choices(d, flatten(jobs, results))
    summary = summarize(d, rows, seeds)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / f"{NAME}.csv", rows, COLUMNS)
    write_csv(out / f"{NAME}_seeds.csv", seeds, SEED_COLUMNS)
    draw(d, rows, out, quick=quick)
    return page.publish(out, NAME, rows=rows, summary=summary, start=start, echo=echo,
                        render=lambda wall: render(d, rows, seeds, findings(summary), quick=quick, wall=wall,
                                                   machine=machine))
