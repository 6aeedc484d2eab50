"""Study `realdata`: meta-learning on real multi-task data (schools as tasks), scored on held-out
schools against m_test, next to the answers that need no meta-learning: `pooled` (one model for
every school), `none` (each new school alone) and `random-effects` (the linear mixed model).

Settings: experiments/realdata/realdata.toml. Features: every column of the bundled table but
the task, the target and the columns the dataset's `exclude` names (identifiers, other outcomes,
recodings of a kept column), a rule fixed before any score was seen; the kept columns are
written to <out>/data/<dataset>.csv and read as a table file. For each dataset and each split
(data.seed), every method is trained once through the engine on the training schools (the
validation schools set aside), then scored at every m_test on the same held-out schools and
rows (paired): with each of its own test-time rules, and with the tuned rule (every rule and
its hyper-parameters tried on the validation schools, the lowest mean MSE chosen; label
"<method> (tuned)"). Means and standard errors: per split over held-out schools, then over
splits as mean_s mu_s with standard error sqrt(sum_s se_s^2) / S; verdicts: a 95% t-interval
of the per-split mean paired differences (n = splits). Writes realdata.md, realdata.csv (one
line per dataset, rule and m_test), realdata_tasks.csv (one line per held-out school, split,
m_test and rule), realdata_runs.csv (one line per trained model: the design's rank beside B's,
the median and worst per-school MSE of its first rule), realdata_summary.json, realdata.png.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from metarep.config.schema import ConfigError, validate
from metarep.data.bundled import BUNDLED
from metarep.data.heldout import episodes, heldout_mse
from metarep.data.read import read_bundled
from metarep.engine.sources import head_prior, run_protocol, tuned_rules
from metarep.engine.tuning import Rule
from metarep.linear.metrics import numerical_rank
from metarep.linear.random_effects import ragged_stats
from metarep.methods import get_method
from metarep.methods.base import shared_head
from metarep.reproduce import protocol, realdata_page
from metarep.reproduce import verdict as verdicts
from metarep.reproduce.common import (
    compose,
    deep_merge,
    experiments_dir,
    fmt,
    machine_line,
    parallel_map,
    write_csv,
    write_text,
)
from metarep.reproduce.studies import page
from metarep.storage.atomic import atomic_write

NAME = "realdata"
HELP = "Test MSE on held-out schools against m_test: meta-learning next to pooled and per-school ridge."
COLUMNS = ("dataset", "rule", "m_test", "splits", "completed", "mse", "mse_se", "heldout_tasks", "chosen")
RUN_COLUMNS = ("dataset", "split", "method", "status", "loss", "effective_rank", "effective_rank_0", "rank", "d",
               "design_rank", "width", "median_school_mse", "worst_school_mse", "train_tasks", "validation_tasks",
               "heldout_tasks", "heldout_drawn", "cpu_s", "message")
TASK_COLUMNS = ("dataset", "split", "task", "rows", "m_test", "method", "mse")
TUNED = " (tuned)"


@dataclass(frozen=True)
class Design:
    data: dict            # config data shared by every run
    datasets: list[str]
    m_test: list[int]
    splits: int
    methods: list[dict]   # {method, rules, moments_width}
    settings: dict        # per dataset: width, moments_width, exclude (columns that are not features)
    references: dict      # column key -> the rule label every rule is compared with (paired)
    tables: dict = dataclasses.field(default_factory=dict)  # dataset -> [data] keys of its exported table

    @property
    def meta(self) -> list[str]:
        """The labels of the rules marked `meta` (the meta-learning methods' own rules), and
        their tuned counterparts."""
        own = [r["label"] for e in self.methods for r in e["rules"] if r.get("meta")]
        return own + [tuned_label(e) for e in self.methods if any(r.get("meta") for r in e["rules"])]

    @property
    def tuned(self) -> bool:
        return self.data.get("test", {}).get("adapt") == "tuned"

    @property
    def labels(self) -> list[str]:
        """Every rule label: each method's own rules, then (tuned) each method under the tuned rule."""
        own = [r["label"] for e in self.methods for r in e["rules"]]
        return list(dict.fromkeys(own + ([tuned_label(e) for e in self.methods] if self.tuned else [])))

    @property
    def columns(self) -> tuple[str, ...]:
        return (*COLUMNS, *(f"{k}{se}" for k in self.references for se in ("", "_se", "_low", "_high", "_verdict")))


def design(data: dict, study: dict) -> Design:
    return Design(data, list(study["datasets"]), sorted(study["m_test"]), int(study["splits"]),
                  list(study["methods"]), dict(study.get("datasets_settings", {})), dict(study["references"]))


def load(quick: bool, experiments=None) -> Design:
    path = experiments_dir(experiments) / "realdata" / "realdata.toml"
    if not path.exists():
        raise ConfigError(f"study file {str(path)!r} not found")
    data, meta = compose([path], quick=quick)
    return design(data, meta.get("study", {}))


def tuned_label(entry: dict) -> str:
    return entry["rules"][0]["label"].split(",")[0] + TUNED


def export_tables(d: Design, out: Path) -> Design:
    """Every dataset whose settings name `exclude` as a CSV of its kept columns in out/data (the
    feature rule: every column but the task, the target and `exclude`); the design with the
    [data] keys that read it."""
    tables = {}
    for dataset in d.datasets:
        exclude = d.settings.get(dataset, {}).get("exclude")
        if exclude is None:
            continue
        spec, frame = BUNDLED[dataset].columns, read_bundled(dataset)
        unknown = sorted(set(exclude) - set(frame.columns))
        if unknown:
            raise ConfigError(f"realdata: {dataset} has no column(s) {', '.join(unknown)} to exclude")
        features = [c for c in frame.columns if c not in {spec.task, spec.target, *exclude}]
        path = Path(out).absolute() / "data" / f"{dataset}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, frame[[spec.task, spec.target, *features]].to_csv(index=False).encode())
        tables[dataset] = {"path": str(path), "task": spec.task, "target": spec.target, "features": features,
                           "missing": "drop"}
    return dataclasses.replace(d, tables=tables)


def job_config(d: Design, dataset: str, split: int, entry: dict) -> dict:
    """The config data of one trained model: shared settings, the dataset (its exported table, or
    the bundled dataset), the split, the method."""
    settings = d.settings.get(dataset, {})
    width = settings.get("moments_width" if entry.get("moments_width") else "width")
    source = d.tables.get(dataset, {"dataset": dataset})
    over = {"data": {**source, "seed": split}, "method": dict(entry["method"]),
            "train": dict(entry.get("train", {})), "test": {"m_test": max(d.m_test)}}
    if width is not None:
        over["model"] = {"width": width}
    return deep_merge(d.data, over)


def plan(d: Design) -> list[dict]:
    return [{"tag": f"{dataset}/{split}/{entry['method']['name']}", "dataset": dataset, "split": split,
             "config": job_config(d, dataset, split, entry), "rules": entry["rules"], "m_test": d.m_test,
             "tuned": tuned_label(entry) if d.tuned else None}
            for dataset in d.datasets for split in range(d.splits) for entry in d.methods]


def effective_rank(sv) -> float:
    """exp of the entropy of the normalised singular values (Roy and Vetterli 2007): d for
    equal singular values, 1 for a single non-zero one."""
    s = np.asarray(sv, dtype=np.float64)
    if s.sum() <= 0:
        return 0.0
    p = s[s > 0] / s.sum()
    return float(np.exp(-(p * np.log(p)).sum()))


def _rule(config, test: dict) -> Rule:
    """A study rule's [test] keys as a tuning.Rule (what it leaves out: the shared [test]'s)."""
    te = config.test
    return Rule(test.get("adapt", config.adapt_rule), steps=test.get("adapt_steps", te.adapt_steps),
                alpha=test.get("alpha", config.test_alpha), ridge=test.get("ridge", te.ridge))


def _tuned(job: dict, B, w, data, prior, m: int) -> tuple[list[float], str]:
    """The tuned rule at m_test = m: chosen on the validation schools, its held-out MSEs, and the
    chosen rule in words."""
    config = validate(deep_merge(job["config"], {"test": {"m_test": m}}))
    sets = {"test": episodes(data.heldout, m), "validation": episodes(data.validation, m)}

    def score(rules, which, progress):
        return np.stack([heldout_mse(B, w, sets[which], rule=r.adapt, prior=prior, **r.keywords()) for r in rules])

    outcome = run_protocol(score, config, admits=tuned_rules(config, prior), n_validation=sets["validation"].n_tasks,
                           n_test=sets["test"].n_tasks)
    assert outcome.tuned is not None
    return outcome.test.tolist(), protocol.rule_text(outcome.tuned["chosen"].describe())


def work(job: dict) -> dict:
    """Train one model through the engine, then score every rule (and the tuned rule) at every
    m_test: per-task MSEs, the held-out schools' names and rows."""
    from metarep.engine import build, run_summary, train

    start = time.process_time()
    config = validate(job["config"])
    exp = build(config)
    state = train(exp, exp.initial_state())
    summary = run_summary(exp, state, None)  # the scores below: the engine's own test would repeat one
    data = cast(Any, exp).source.data  # the table source's TaskData
    sv = summary["final"]["singular_values"]
    sv0 = [v for k, v in state.history[0].items() if k.startswith("sv_")] if state.history else sv
    out = {"status": state.status, "message": state.message, "loss": summary["final"].get("loss"),
           "effective_rank": effective_rank(sv), "effective_rank_0": effective_rank(sv0),
           "rank": int(numerical_rank(np.array(sv))) if sv else 0,
           "design_rank": int(np.linalg.matrix_rank(data.train.X)),
           "d": data.d, "width": state.params.B.shape[1], "train_tasks": data.train.n_tasks,
           "validation_tasks": data.validation.n_tasks if data.validation is not None else 0,
           "heldout_drawn": data.counts["heldout_tasks"] + data.counts["heldout_tasks_dropped"],
           "scores": {}, "chosen": {}, "schools": {}}
    if state.status == "completed":
        B, w = state.params.B, shared_head(state.params)
        fit_on = data.train
        prior = head_prior(config, B, w, lambda: ragged_stats(fit_on.X, fit_on.y, fit_on.offsets))
        for rule in job["rules"]:
            r = _rule(config, rule.get("test", {}))
            out["scores"][rule["label"]] = {
                m: heldout_mse(B, w, episodes(data.heldout, m), rule=r.adapt, prior=prior, **r.keywords()).tolist()
                for m in job["m_test"]}
        if job.get("tuned"):
            tuned = {m: _tuned(job, B, w, data, prior, m) for m in job["m_test"]}
            out["scores"][job["tuned"]] = {m: v[0] for m, v in tuned.items()}
            out["chosen"] = {m: v[1] for m, v in tuned.items()}
        own = np.array(list(out["scores"][job["rules"][0]["label"]].values()))  # (m_test, schools)
        out["median_school_mse"], out["worst_school_mse"] = float(np.median(own)), float(own.max())
        for m in job["m_test"]:
            ep = episodes(data.heldout, m)
            rows = np.bincount(ep.task, minlength=ep.n_tasks) + m  # scored rows + the m adapted on
            out["schools"][m] = {"names": list(ep.names), "rows": rows.tolist()}
    out["heldout_tasks"] = episodes(data.heldout, max(job["m_test"])).n_tasks
    out["cpu_s"] = time.process_time() - start
    return out


def _combine(per_split: list[np.ndarray]) -> tuple[float, float]:
    """Mean over splits of the per-split means, and sqrt(sum of squared per-split SEs) / S."""
    means = [float(v.mean()) for v in per_split]
    ses = [float(v.std(ddof=1) / np.sqrt(v.size)) if v.size > 1 else float("nan") for v in per_split]
    return float(np.mean(means)), float(np.sqrt(np.sum(np.square(ses)))) / len(per_split)


def aggregate(d: Design, jobs: list[dict], results: list[dict]) -> tuple[list[dict], list[dict]]:
    """(rows: one per dataset, rule and m_test; runs: one per trained model)."""
    runs = [{"dataset": j["dataset"], "split": j["split"], "method": j["config"]["method"]["name"],
             **{k: r[k] for k in RUN_COLUMNS[3:] if k in r}} for j, r in zip(jobs, results)]
    scores: dict = {}
    chosen: dict = {}
    for job, result in zip(jobs, results):
        for label, by_m in result["scores"].items():
            for m, mse in by_m.items():
                scores.setdefault((job["dataset"], label, int(m)), {})[job["split"]] = np.asarray(mse)
        for m, rule in result.get("chosen", {}).items():
            chosen.setdefault((job["dataset"], job["tuned"], int(m)), []).append(rule)
    rows = []
    for dataset in d.datasets:
        for label in d.labels:
            for m in d.m_test:
                rows.append(_row(d, scores, dataset, label, m, chosen.get((dataset, label, m))))
    return rows, runs


def task_rows(jobs: list[dict], results: list[dict]) -> list[dict]:
    """One line per held-out school, split, m_test and rule: its rows and its test MSE."""
    out = []
    for job, result in zip(jobs, results):
        for label, by_m in result["scores"].items():
            for m, mse in by_m.items():
                school = result["schools"][m]
                out += [{"dataset": job["dataset"], "split": job["split"], "task": name, "rows": rows, "m_test": m,
                         "method": label, "mse": v} for name, rows, v in zip(school["names"], school["rows"], mse)]
    return out


def _row(d: Design, scores: dict, dataset: str, label: str, m: int, chosen: list[str] | None) -> dict:
    mine = scores.get((dataset, label, m), {})
    row = {"dataset": dataset, "rule": label, "m_test": m, "splits": d.splits, "completed": len(mine),
           "chosen": protocol.chosen(chosen) if chosen else None}
    if mine:
        row["mse"], row["mse_se"] = _combine(list(mine.values()))
        row["heldout_tasks"] = int(np.mean([v.size for v in mine.values()]))
    for key, reference in d.references.items():
        other = scores.get((dataset, reference, m), {})
        paired = [mine[s] - other[s] for s in mine if s in other]
        if paired and reference != label:
            row[key], row[f"{key}_se"] = _combine(paired)
            v = verdicts.paired([float(p.mean()) for p in paired])
            row[f"{key}_low"], row[f"{key}_high"], row[f"{key}_verdict"] = v.low, v.high, verdict(v)
    return row


def verdict(v: verdicts.Verdict) -> str:
    """'better' / 'worse' when the 95% t-interval of the per-split mean paired differences lies
    below / above zero, else 'not decided'."""
    return {verdicts.HOLDS: "better", verdicts.FAILS: "worse"}.get(v.verdict, "not decided")


def _versus(row: dict, key: str, reference: str) -> str:
    word = row.get(f"{key}_verdict", "n/a")
    interval = f" (95% CI [{fmt(row.get(f'{key}_low'))}, {fmt(row.get(f'{key}_high'))}])"
    return (f"{word} than {reference}" if word in ("better", "worse") else f"{word} against {reference}") + interval


def findings(d: Design, rows: list[dict], runs: list[dict]) -> list[str]:
    """Per dataset: which held-out schools are scored, the best rule at the smallest and largest
    m_test, how the meta-learning rules compare with the references (paired verdicts over splits),
    and the effective rank of every learned B beside the design's rank."""
    notes = []
    for dataset in d.datasets:
        notes += _scored_note(d, dataset, [r for r in runs if r["dataset"] == dataset and "heldout_tasks" in r])
        notes += _score_notes(d, dataset, [r for r in rows if r["dataset"] == dataset and r.get("mse") is not None])
        notes += _rank_notes(dataset, [r for r in runs if r["dataset"] == dataset and "effective_rank" in r])
    return notes


def _score_notes(d: Design, dataset: str, rows: list[dict]) -> list[str]:
    notes = []
    for m in (d.m_test[0], d.m_test[-1]):
        at = sorted((r for r in rows if r["m_test"] == m), key=lambda r: r["mse"])
        if at:
            compared = ["{} {}".format(r["rule"], ", ".join(_versus(r, key, ref) for key, ref in d.references.items()))
                        for r in at if r["rule"] in d.meta]
            notes.append(f"{dataset}, m_test = {m}: lowest MSE {at[0]['rule']} {fmt(at[0]['mse'])} "
                         f"± {fmt(at[0]['mse_se'], 2)}; " + "; ".join(compared))
    return notes


def _scored_note(d: Design, dataset: str, runs: list[dict]) -> list[str]:
    """Which schools the scores are over: held-out schools with more than max(m_test) rows."""
    if not runs:
        return []
    scored = sum(r["heldout_tasks"] for r in runs) / len(runs)
    drawn = sum(r["heldout_drawn"] for r in runs) / len(runs)
    return [f"{dataset}: scored on the held-out schools with more than {max(d.m_test)} rows, {fmt(scored)} of the "
            f"{fmt(drawn)} held out per split (mean over {len(runs)} trained models); d = {runs[0]['d']}, design rank "
            f"{runs[0]['design_rank']}"]


def _rank_notes(dataset: str, runs: list[dict]) -> list[str]:
    """The effective rank of B for every method that learns it (not a fixed width)."""
    notes = []
    for method in dict.fromkeys(r["method"] for r in runs):
        if get_method(method).fixed_width is not None:
            continue
        mine = [r for r in runs if r["method"] == method]
        notes.append(f"{dataset}: {method}'s B (width {mine[0]['width']}, d = {mine[0]['d']}) has effective "
                     f"rank {fmt(np.mean([r['effective_rank'] for r in mine]))}, from "
                     f"{fmt(np.mean([r['effective_rank_0'] for r in mine]))} at step 0 (means over splits), "
                     f"numerical rank {'/'.join(str(r.get('rank')) for r in mine)} against the training design's "
                     f"{'/'.join(str(r.get('design_rank')) for r in mine)} (per split)")
    return notes


def run(out: Path, *, quick: bool = False, workers: int = 2, experiments=None,
        echo: Callable[[str], None] = print) -> dict:
    start = time.perf_counter()
    machine = machine_line(workers)
    d = load(quick, experiments)
    for dataset in d.datasets:  # before any work: a missing optional package is one line
        read_bundled(dataset)
    out = Path(out)
    d = export_tables(d, out)
    jobs = plan(d)
    echo(f"{NAME}: {len(d.datasets)} datasets x {d.splits} splits x {len(d.methods)} methods: {len(jobs)} jobs "
         f"on {workers} worker(s)")
    costs = [get_method(j["config"]["method"]["name"]).relative_cost for j in jobs]
    results = parallel_map(work, jobs, workers=workers, costs=costs, on_done=page.echo_done(echo, jobs, NAME))
    rows, runs = aggregate(d, jobs, results)
    notes = findings(d, rows, runs)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / f"{NAME}.csv", rows, d.columns)
    write_csv(out / f"{NAME}_tasks.csv", task_rows(jobs, results), TASK_COLUMNS)
    write_csv(out / f"{NAME}_runs.csv", runs, RUN_COLUMNS)
    realdata_page.draw(d, rows, out, NAME, quick=quick)
    wall = time.perf_counter() - start
    page.write_summary(out, NAME, {"rows": rows, "runs": runs, "wall_s": wall, "quick": quick,
                                   "features": {ds: t["features"] for ds, t in d.tables.items()}})
    text = realdata_page.render(d, rows, runs, notes, NAME, quick=quick, wall=wall, machine=machine)
    write_text(out / f"{NAME}.md", text)
    echo(text)
    return {"rows": rows, "runs": runs, "notes": notes, "wall_s": wall}
