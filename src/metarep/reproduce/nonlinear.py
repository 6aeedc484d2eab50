"""`metarep reproduce nonlinear`: the paper's Appendix I question at the paper's setting. Do two-
and three-layer relu networks trained by the meta-learning methods learn span(B*) and unlearn the
rest, does that need finite m_in, at what rate, and does it matter at test time?

Settings: experiments/nonlinear/base.toml (config sections; [study] for the grid, the reference
model, the lam grid of multi-task learning and the controls). Two parts, every run through the
engine, results kept in `out/.kept-nonlinear` so that an interrupted command resumes:

- the table: every method on every network (layers x bias) and teacher, seeds paired (one seed
  fixes B*, the training, validation and test tasks and the start of the first layer), scored
  under its own rule and under one tuned rule for all, at the horizon and at earlier steps;
  burer-monteiro's lam chosen per seed on validation tasks; the linear random-effects model as
  the reference (linear teacher);
- the controls: FO-ANIL on fresh tasks, identity and relu networks on the linear and relu
  teachers, m_in from 5 to 1000, traced over training (perp_ratio, grad_perp_share, effective
  rank, R^2 of the teacher's features), for the unlearning verdicts, the late slopes and the
  relation of test risk to unlearning (nonlinear_verdicts.py);
- with `[study.controls] population = true`, the theory's own dynamics beside them: the linear
  model (the identity network on the linear teacher, which starts where that control starts)
  under the exact population update (`train.tasks = "inf"`, no noise from drawing tasks), at
  each m_in: what the finite batch of tasks adds to the unlearning.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from metarep.config.schema import ConfigError, validate
from metarep.methods import get_method
from metarep.reproduce import protocol
from metarep.reproduce.common import (
    compose,
    deep_merge,
    experiments_dir,
    log_points,
    machine_line,
    with_seed,
    write_csv,
    write_text,
)
from metarep.running.pool import finished, resumable_map

CURVE_KEYS = ("perp_ratio", "grad_perp_share", "effective_rank", "r2", "perp_norm", "align_norm")
SEED_COLUMNS = ("part", "teacher", "net", "activation", "method", "lam", "m_in", "seed", "status", "own", "own_se",
                "tuned", "tuned_se", "tuned_validation", "tuned_rule", "perp_ratio", "grad_perp_share",
                "effective_rank", "r2", "cpu_s")


def load(*, quick: bool, experiments=None) -> tuple[dict, dict]:
    path = experiments_dir(experiments) / "nonlinear" / "base.toml"
    if not path.exists():
        raise ConfigError(f"{str(path)!r} not found")
    data, meta = compose([path], quick=quick)
    return data, meta.get("study", {})


def net_name(net: dict) -> str:
    return f"{net['layers']} layers{' + bias' if net['bias'] else ''}"


def _job(part: str, config: dict, points: list[int], **tags) -> dict:
    validate(config)
    return {"part": part, "config": config, "points": points, **tags}


def table_jobs(data: dict, study: dict) -> list[dict]:
    """Every (teacher, network, method, seed), one job per lam of study.lam for its method, and
    the reference model per (teacher, seed)."""
    steps = data["train"]["steps"]
    marks = [s for s in study.get("score_at", []) if 0 < s < steps]
    lam = study.get("lam", {})
    jobs = []
    for teacher in study["teachers"]:
        for net in study["nets"]:
            for method in study["methods"]:
                if {"method": method, "teacher": teacher} in study.get("skip", []):
                    continue
                own = study.get("method_config", {}).get(method, {})
                lams = lam.get("values", [None]) if method == lam.get("method") else [None]
                for value in lams:
                    cell = deep_merge(data, {"problem": {"teacher": teacher}, "model": dict(net),
                                             "method": {"name": method, **({} if value is None else {"lam": value})}})
                    cell = deep_merge(cell, own)
                    for seed in range(study["seeds"]):
                        jobs.append(_job("table", with_seed(cell, seed), [0, steps], teacher=teacher,
                                         net=net_name(net), method=method, lam=value, seed=seed, score_at=marks))
        ref = study.get("reference")
        if ref and teacher in ref.get("teachers", []):
            cell = _linear_model(deep_merge(data, {"problem": {"teacher": teacher}, "model": {"width": data[
                "problem"]["d"]}, "method": {"name": ref["method"]}}))
            for seed in range(study["seeds"]):
                jobs.append(_job("table", with_seed(cell, seed), [0], teacher=teacher, net="linear model",
                                 method=ref["method"], lam=None, seed=seed, score_at=[]))
    return jobs


def control_jobs(data: dict, study: dict) -> list[dict]:
    """FO-ANIL (study.controls.method) on fresh tasks: every (activation, teacher, m_in, seed)."""
    c = study["controls"]
    points = log_points(c["steps"], c["points"])
    jobs = []
    for activation, teacher in c["nets"]:
        for m_in in c["m_in"]:
            cell = deep_merge(data, {"problem": {"teacher": teacher},
                                     "model": {"layers": 2, "bias": False, "activation": activation},
                                     "method": {"name": c["method"]},
                                     "train": {"tasks": "online", "batch_tasks": c["batch_tasks"], "m_in": m_in,
                                               "steps": c["steps"], "log_every": c["steps"]}})
            cell["train"].pop("tasks_per_step", None)
            for seed in range(c["seeds"]):
                jobs.append(_job("control", with_seed(cell, seed), points, teacher=teacher, activation=activation,
                                 net=f"{activation} net", method=c["method"], m_in=m_in, seed=seed, score_at=[]))
    return jobs


def _linear_model(cell: dict) -> dict:
    """The cell with the linear model in place of the network: of [model] only the keys the linear
    model reads (its width and start), and no train.tasks_per_step (an mlp key)."""
    model = {k: v for k, v in cell["model"].items() if k in ("width", "init_scale", "init_head_scale")}
    train = {k: v for k, v in cell["train"].items() if k != "tasks_per_step"}
    return {**cell, "model": {**model, "arch": "linear"}, "train": train}


def population_jobs(data: dict, study: dict) -> list[dict]:
    """The linear model under the population update at each m_in of the controls, one job per seed
    (the seed fixes B* and the start, as for the identity-network control of that seed)."""
    c = study["controls"]
    if not c.get("population"):
        return []
    points = log_points(c["steps"], c["points"])
    cell = _linear_model(deep_merge(data, {"problem": {"teacher": "linear"}, "method": {"name": c["method"]},
                                           "train": {"tasks": "inf", "steps": c["steps"], "log_every": c["steps"]}}))
    return [_job("population", with_seed(deep_merge(cell, {"train": {"m_in": m_in}}), seed), points,
                 teacher="linear", activation="identity", net="linear model, population", method=c["method"],
                 m_in=m_in, seed=seed, score_at=[])
            for m_in in c["m_in"] for seed in range(c["seeds"])]


def run_job(job: dict) -> dict:
    """One run (in a worker): trained to each step of job["score_at"] and scored there (both
    rules, validation and test), then to the end and scored; the tracked measures at the logged
    steps; the CPU seconds."""
    from metarep.engine import build, evaluate_final, train

    start = time.process_time()
    exp = build(validate(job["config"]))
    state = exp.initial_state()
    scored = []
    for mark in job["score_at"]:
        state = train(exp, state, points=job["points"], should_stop=_reached(state, mark))
        if state.status != "interrupted":
            break
        scored.append({"step": state.step, **_scores(exp, state.params)})
        state.status = "running"
    state = train(exp, state, points=job["points"])
    score = protocol.scores(evaluate_final(exp, state))
    scored.append({"step": state.step, **score})
    curve = [{"step": r["step"], **{k: r.get(k) for k in CURVE_KEYS}} for r in state.history]
    for row in curve:
        if row["perp_ratio"] is None and row["perp_norm"] is not None and row["align_norm"]:
            row["perp_ratio"] = row["perp_norm"] / row["align_norm"]     # the linear model logs the two norms
    last = curve[-1] if curve else dict.fromkeys(CURVE_KEYS)
    return {"status": state.status, "step": state.step, **score, **{k: last.get(k) for k in CURVE_KEYS},
            "scored": scored, "curve": curve, "cpu_s": time.process_time() - start}


def _reached(state, step: int) -> Callable[[], bool]:
    return lambda: state.step >= step


def _scores(exp, params) -> dict:
    import numpy as np

    with np.errstate(all="ignore"), exp.compute():
        return protocol.scores(exp.evaluate(params))


def _cost(job: dict) -> float:
    """A rough relative cost, for scheduling the longest first."""
    t = job["config"]["train"]
    if t["tasks"] == "inf":
        return 5.0       # the population update's step costs no samples
    per_step = t.get("tasks_per_step") or (t["batch_tasks"] if t["tasks"] == "online" else t["tasks"])
    work = per_step * (t["m_in"] + t["m_out"]) * job["config"]["model"].get("layers", 1)
    method = get_method(job["method"], job["config"]["model"].get("arch", "linear"))
    body = 4 if getattr(method.gradient, "per_task_body", False) else 1
    return 5 + t["steps"] * work * body / 1e5 if method.iterative else 5


def run(out: Path, *, quick: bool = False, workers: int = 2, experiments=None,
        echo: Callable[[str], None] = print) -> list[dict]:
    """The table and the controls into `out`: nonlinear.md (the page), nonlinear.csv (table rows),
    nonlinear_seeds.csv (every run), nonlinear_curves.csv (the controls' traces),
    nonlinear_verdicts.csv, nonlinear_slopes.csv and nonlinear.png (the controls' curves)."""
    from metarep.reproduce import nonlinear_verdicts as verdicts
    from metarep.reproduce.nonlinear_plot import plot_controls

    data, study = load(quick=quick, experiments=experiments)
    jobs = table_jobs(data, study) + control_jobs(data, study) + population_jobs(data, study)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    kept = out / ".kept-nonlinear"
    machine = machine_line(workers)
    start = time.perf_counter()
    done = [0]

    def on_done(i, result, seconds):
        done[0] += 1
        echo(f"  [{done[0]}/{len(jobs)}, {time.perf_counter() - start:.0f} s] {_label(jobs[i])}: "
             f"{result['status']} ({seconds:.0f} s)")

    results = resumable_map(run_job, jobs, workers=workers, costs=[_cost(j) for j in jobs], folder=kept,
                            on_done=on_done)
    wall = time.perf_counter() - start
    runs = [{**{k: j.get(k) for k in ("part", "teacher", "net", "activation", "method", "lam", "m_in", "seed",
                                      "score_at")}, **r} for j, r in zip(jobs, results)]
    page = verdicts.write_outputs(out, runs, data, study)
    plot_controls(out / "nonlinear.png", [r for r in runs if r["part"] in ("control", "population")],
                  study["controls"], quick=quick)
    write_csv(out / "nonlinear_seeds.csv", runs, SEED_COLUMNS)
    write_csv(out / "nonlinear_curves.csv", [{k: r[k] for k in ("part", "teacher", "activation", "m_in", "seed")} | row
                                             for r in runs if r["part"] in ("control", "population")
                                             for row in r["curve"]])
    header = (f"{machine}; settings experiments/nonlinear/base.toml{' (--quick)' if quick else ''}; "
              f"{len(jobs)} runs, wall time {wall:.0f} s ({sum(r['cpu_s'] for r in results):.0f} CPU-seconds in "
              f"the runs).")
    write_text(out / "nonlinear.md", f"# Nonlinear networks at the paper's setting\n\n{header}\n\n{page}")
    finished(kept)
    echo(f"wrote {out / 'nonlinear.md'}")
    return runs


def _label(job: dict) -> str:
    if job["part"] == "population":
        return f"population update, linear model, m_in {job['m_in']}, seed {job['seed']}"
    if job["part"] == "control":
        return f"control {job['net']}, {job['teacher']} teacher, m_in {job['m_in']}, seed {job['seed']}"
    lam = "" if job.get("lam") is None else f" lam {job['lam']}"
    return f"{job['teacher']} teacher, {job['net']}, {job['method']}{lam}, seed {job['seed']}"
