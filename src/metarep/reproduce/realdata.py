"""Study `realdata`: meta-learning on real multi-task data (schools as tasks), scored on held-out
schools against m_test, next to the two answers that need no meta-learning: `pooled` (one model
for every school) and `none` (each new school alone).

Settings: experiments/realdata/realdata.toml. For each bundled dataset and each split
(data.seed), every method is trained once through the engine, then scored with each of its
test-time rules at every m_test on the same held-out schools and rows (paired). Means and
standard errors: per split over held-out schools, then over splits as mean_s mu_s with standard
error sqrt(sum_s se_s^2) / S. Writes realdata.md, realdata.csv (one line per dataset, rule and
m_test), realdata_runs.csv (one line per trained model, with the median and the worst per-school
MSE of its first rule over every m_test), realdata_summary.json, realdata.png.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from metarep.config import ConfigError, validate
from metarep.data.heldout import episodes, heldout_mse
from metarep.data.read import read_bundled
from metarep.methods import get_method
from metarep.methods.base import shared_head
from metarep.metrics import numerical_rank
from metarep.reproduce.common import (
    compose,
    deep_merge,
    experiments_dir,
    fmt,
    machine_line,
    markdown_table,
    parallel_map,
    write_csv,
    write_text,
)
from metarep.reproduce.studies import page

NAME = "realdata"
HELP = "Test MSE on held-out schools against m_test: meta-learning next to pooled and per-school ridge."
COLUMNS = ("dataset", "rule", "m_test", "splits", "completed", "mse", "mse_se", "heldout_tasks")
RUN_COLUMNS = ("dataset", "split", "method", "status", "loss", "effective_rank", "effective_rank_0", "rank", "d",
               "width", "median_school_mse", "worst_school_mse",
               "train_tasks", "heldout_tasks", "cpu_s", "message")


@dataclass(frozen=True)
class Design:
    data: dict            # config data shared by every run
    datasets: list[str]
    m_test: list[int]
    splits: int
    methods: list[dict]   # {method, rules, moments_width}
    settings: dict        # per dataset: width, moments_width
    references: dict      # column key -> the rule label every rule is compared with (paired)

    @property
    def meta(self) -> list[str]:
        """The labels of the rules marked `meta` (the meta-learning methods' own rules)."""
        return [r["label"] for e in self.methods for r in e["rules"] if r.get("meta")]

    @property
    def columns(self) -> tuple[str, ...]:
        return (*COLUMNS, *(f"{k}{se}" for k in self.references for se in ("", "_se")))


def design(data: dict, study: dict) -> Design:
    return Design(data, list(study["datasets"]), sorted(study["m_test"]), int(study["splits"]),
                  list(study["methods"]), dict(study.get("datasets_settings", {})), dict(study["references"]))


def load(quick: bool, experiments=None) -> Design:
    path = experiments_dir(experiments) / "realdata" / "realdata.toml"
    if not path.exists():
        raise ConfigError(f"study file {str(path)!r} not found")
    data, meta = compose([path], quick=quick)
    return design(data, meta.get("study", {}))


def job_config(d: Design, dataset: str, split: int, entry: dict) -> dict:
    """The config data of one trained model: shared settings, the dataset, the split, the method."""
    settings = d.settings.get(dataset, {})
    width = settings.get("moments_width" if entry.get("moments_width") else "width")
    over = {"data": {"dataset": dataset, "seed": split}, "method": dict(entry["method"]),
            "train": dict(entry.get("train", {})), "test": {"m_test": max(d.m_test)}}
    if width is not None:
        over["model"] = {"width": width}
    return deep_merge(d.data, over)


def plan(d: Design) -> list[dict]:
    return [{"tag": f"{dataset}/{split}/{entry['method']['name']}", "dataset": dataset, "split": split,
             "config": job_config(d, dataset, split, entry), "rules": entry["rules"], "m_test": d.m_test}
            for dataset in d.datasets for split in range(d.splits) for entry in d.methods]


def effective_rank(sv) -> float:
    """exp of the entropy of the normalised singular values (Roy and Vetterli 2007): d for
    equal singular values, 1 for a single non-zero one."""
    s = np.asarray(sv, dtype=np.float64)
    if s.sum() <= 0:
        return 0.0
    p = s[s > 0] / s.sum()
    return float(np.exp(-(p * np.log(p)).sum()))


def work(job: dict) -> dict:
    """Train one model through the engine, then score every rule at every m_test: per-task MSEs."""
    from metarep.engine import run

    start = time.process_time()
    config = validate(job["config"])
    exp, state, summary = run(config)
    data = cast(Any, exp).source.data  # the table source's TaskData
    sv = summary["final"]["singular_values"]
    sv0 = [v for k, v in state.history[0].items() if k.startswith("sv_")] if state.history else sv
    out = {"status": state.status, "message": state.message, "loss": summary["final"].get("loss"),
           "effective_rank": effective_rank(sv), "effective_rank_0": effective_rank(sv0),
           "rank": int(numerical_rank(np.array(sv))) if sv else 0,
           "d": data.d, "width": state.params.B.shape[1], "train_tasks": data.train.n_tasks, "scores": {}}
    if state.status == "completed":
        B, w = state.params.B, shared_head(state.params)
        for rule in job["rules"]:
            c = validate(deep_merge(job["config"], {"test": rule.get("test", {})}))
            out["scores"][rule["label"]] = {
                m: heldout_mse(B, w, episodes(data.heldout, m), rule=c.adapt_rule, alpha=c.test_alpha,
                               steps=c.test.adapt_steps, ridge=c.test.ridge).tolist() for m in job["m_test"]}
        own = np.array(list(out["scores"][job["rules"][0]["label"]].values()))  # (m_test, schools)
        out["median_school_mse"], out["worst_school_mse"] = float(np.median(own)), float(own.max())
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
    for job, result in zip(jobs, results):
        for label, by_m in result["scores"].items():
            for m, mse in by_m.items():
                scores.setdefault((job["dataset"], label, m), {})[job["split"]] = np.asarray(mse)
    labels = list(dict.fromkeys(r["label"] for e in d.methods for r in e["rules"]))
    rows = []
    for dataset in d.datasets:
        for label in labels:
            for m in d.m_test:
                rows.append(_row(d, scores, dataset, label, m))
    return rows, runs


def _row(d: Design, scores: dict, dataset: str, label: str, m: int) -> dict:
    mine = scores.get((dataset, label, m), {})
    row = {"dataset": dataset, "rule": label, "m_test": m, "splits": d.splits, "completed": len(mine)}
    if mine:
        row["mse"], row["mse_se"] = _combine(list(mine.values()))
        row["heldout_tasks"] = int(np.mean([v.size for v in mine.values()]))
    for key, reference in d.references.items():
        other = scores.get((dataset, reference, m), {})
        paired = [mine[s] - other[s] for s in mine if s in other]
        if paired and reference != label:
            row[key], row[f"{key}_se"] = _combine(paired)
    return row


def verdict(row: dict, key: str) -> str:
    """'better' / 'worse' when the paired difference is beyond two standard errors, else 'tied'."""
    diff, se = row.get(key), row.get(f"{key}_se")
    if diff is None or se is None or not np.isfinite(se):
        return "n/a"
    return "better" if diff < -2 * se else "worse" if diff > 2 * se else "tied"


def _versus(row: dict, key: str, reference: str) -> str:
    word = verdict(row, key)
    return f"{word} than {reference}" if word in ("better", "worse") else f"{word} with {reference}"


def findings(d: Design, rows: list[dict], runs: list[dict]) -> list[str]:
    """Per dataset: the best rule at the smallest and largest m_test, how the meta-learning
    rules compare with the references (paired, two standard errors), and the effective rank of
    every learned B."""
    notes = []
    for dataset in d.datasets:
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


def _rank_notes(dataset: str, runs: list[dict]) -> list[str]:
    """The effective rank of B for every method that learns it (not a fixed width)."""
    notes = []
    for method in dict.fromkeys(r["method"] for r in runs):
        if get_method(method).fixed_width is not None:
            continue
        mine = [r for r in runs if r["method"] == method]
        notes.append(f"{dataset}: {method}'s B (width {mine[0]['width']}, d = {mine[0]['d']}) has effective "
                     f"rank {fmt(np.mean([r['effective_rank'] for r in mine]))}, from "
                     f"{fmt(np.mean([r['effective_rank_0'] for r in mine]))} at step 0 (means over splits)")
    return notes


def draw(d: Design, rows: list[dict], out: Path, *, quick: bool = False) -> None:
    from matplotlib.figure import Figure

    from metarep.plots import curve_style, setting_title

    cols = min(2, len(d.datasets))
    rows_ = -(-len(d.datasets) // cols)
    fig = Figure(figsize=(5.2 * cols, 3.6 * rows_ + 1.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows_, cols, squeeze=False).ravel())
    for ax in axes[len(d.datasets):]:
        ax.set_visible(False)
    labels = list(dict.fromkeys(r["rule"] for r in rows))
    for ax, dataset in zip(axes, d.datasets):
        for i, label in enumerate(labels):
            line = [r for r in rows if r["dataset"] == dataset and r["rule"] == label and r.get("mse") is not None]
            if line:  # rules that coincide (fo-anil, anil, fo-maml) told apart by line style and marker
                style = {**curve_style(i), "markevery": 1}
                ax.errorbar([r["m_test"] for r in line], [r["mse"] for r in line],
                            yerr=[r["mse_se"] for r in line], capsize=3, label=label, **style)
        ax.set_xscale("log")
        ax.set_xticks(d.m_test, [str(m) for m in d.m_test])
        ax.set_xticks([], minor=True)
        ax.set(title=dataset, xlabel="m_test (rows of a new school adapted on)", ylabel="test MSE")
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncol=4, fontsize=8)
    m = validate(deep_merge(d.data, {"data": {"dataset": d.datasets[0]}})).train
    splits = f"{d.splits} split{'s' if d.splits > 1 else ''}"
    fig.suptitle(setting_title(f"Held-out schools: test MSE (standardised target), mean ± SE over {splits}",
                               f"m_in = {m.m_in}, m_out = {m.m_out}, {m.steps} steps", quick), fontsize=10)
    page.save_png(fig, out, NAME)


def render(d: Design, rows: list[dict], runs: list[dict], notes: list[str], *, quick: bool, wall: float,
           machine: str) -> str:
    lines = [f"# Real multi-task data: held-out schools{' (quick run)' if quick else ''}", "",
             f"Settings: `experiments/realdata/realdata.toml`. Wall time {wall:.1f} s ({machine}).", "",
             f"![{NAME}]({NAME}.png)", ""]
    lines += page.findings_block(notes)
    head = ["dataset", "rule", *[f"m_test = {m}" for m in d.m_test]]
    table = []
    for dataset in d.datasets:
        for label in dict.fromkeys(r["rule"] for r in rows):
            cells = [r for r in rows if r["dataset"] == dataset and r["rule"] == label]
            table.append([dataset, label, *[f"{fmt(r.get('mse'))} ± {fmt(r.get('mse_se'), 2)}" for r in cells]])
    lines += ["## Test MSE, mean ± SE over held-out schools and splits", "", markdown_table(head, table)]
    diff = [[r["dataset"], r["rule"], r["m_test"], *(f"{fmt(r.get(k))} ± {fmt(r.get(k + '_se'), 2)}"
                                                     for k in d.references)] for r in rows]
    lines += ["## Paired differences (negative: lower MSE than the reference)", "",
              markdown_table(["dataset", "rule", "m_test", *(f"minus {ref}" for ref in d.references.values())],
                             diff)]
    lines += ["## The learned B (methods with a fixed B = I_d left out)", "",
              markdown_table(["dataset", "method", "d", "width k'", "effective rank", "at step 0",
                              "rank (rel. tol 1e-2), per split", "completed"], _rank_rows(runs))]
    return "\n".join(lines)


def _rank_rows(runs: list[dict]) -> list[list]:
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in runs:
        if get_method(r["method"]).fixed_width is None:
            groups.setdefault((r["dataset"], r["method"]), []).append(r)
    return [[ds, method, g[0].get("d"), g[0].get("width"), fmt(np.mean([r.get("effective_rank", np.nan) for r in g])),
             fmt(np.mean([r.get("effective_rank_0", np.nan) for r in g])), "/".join(str(r.get("rank")) for r in g),
             sum(r["status"] == "completed" for r in g)] for (ds, method), g in groups.items()]


def run(out: Path, *, quick: bool = False, workers: int = 2, experiments=None,
        echo: Callable[[str], None] = print) -> dict:
    start = time.perf_counter()
    machine = machine_line(workers)
    d = load(quick, experiments)
    for dataset in d.datasets:  # before any work: a missing optional package is one line
        read_bundled(dataset)
    jobs = plan(d)
    echo(f"{NAME}: {len(d.datasets)} datasets x {d.splits} splits x {len(d.methods)} methods: {len(jobs)} jobs "
         f"on {workers} worker(s)")
    costs = [get_method(j["config"]["method"]["name"]).relative_cost for j in jobs]
    results = parallel_map(work, jobs, workers=workers, costs=costs, on_done=page.echo_done(echo, jobs, NAME))
    rows, runs = aggregate(d, jobs, results)
    notes = findings(d, rows, runs)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / f"{NAME}.csv", rows, d.columns)
    write_csv(out / f"{NAME}_runs.csv", runs, RUN_COLUMNS)
    draw(d, rows, out, quick=quick)
    wall = time.perf_counter() - start
    page.write_summary(out, NAME, {"rows": rows, "runs": runs, "wall_s": wall, "quick": quick})
    text = render(d, rows, runs, notes, quick=quick, wall=wall, machine=machine)
    write_text(out / f"{NAME}.md", text)
    echo(text)
    return {"rows": rows, "runs": runs, "notes": notes, "wall_s": wall}
