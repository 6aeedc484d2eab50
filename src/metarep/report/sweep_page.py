"""The page of a sweep directory: what was run (config, grid, seeds, the command that
continues it), the results aggregated over seeds, every run, the runs that diverged or
failed, and the figures."""

from __future__ import annotations

import tomllib
from collections import Counter
from pathlib import Path
from typing import Any

import tomli_w

from metarep.report.page import ReportError, files_section, finish, image, link, rel, table
from metarep.storage.results import (
    METRICS,
    PM,
    ResultsError,
    aggregate,
    best_point,
    grid_keys_of,
    load_results,
    mean_sd_text,
    natural_key,
    test_score,
)
from metarep.storage.tables import fmt

SUMMARY_FIGURE = "sweep_summary.png"
MAX_EMBEDDED_FIGURES = 16
STATUSES = ("completed", "diverged", "failed")


def _read_spec(directory: Path) -> dict | None:
    path = directory / "sweep.toml"
    if not path.exists():
        return None
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ReportError(f"{str(path)!r} is not readable TOML: {err}") from None


def _run_label(row: dict, keys: list[str]) -> str:
    return ", ".join([f"{k}={fmt(row.get(k))}" for k in keys] + [f"seed={fmt(row.get('seed'))}"])


def _sorted_rows(rows: list[dict], keys: list[str]) -> list[dict]:
    return sorted(rows, key=lambda r: ([natural_key(r.get(k)) for k in keys], natural_key(r.get("seed"))))


def _header(directory: Path, spec: dict | None, rows: list[dict]) -> list[str]:
    info = (spec or {}).get("sweep", {})
    total = info.get("runs", len(rows))
    name = Path(info["config"]).stem if info.get("config") else directory.name
    statuses = Counter(row["status"] for row in rows)
    parts = [f"{statuses.get(s, 0)} {s}" for s in STATUSES]
    missing = max(0, total - len(rows))
    if missing:
        parts.append(f"{missing} not finished (continue with the command below)")
    return [f"# Sweep report: {name}", "", f"{total} runs: {', '.join(parts)}. Directory: `{directory}`.", ""]


def _what_was_run(directory: Path, spec: dict) -> list[str]:
    from metarep.sweeps import command_line, format_seeds, format_value

    info = spec.get("sweep", {})
    sets = info.get("set", [])
    out = ["## What was run", "",
           f"- Config: `{info.get('config')}`" + (f", with `--set {' '.join(sets)}`" if sets else "")]
    if info.get("seeds") is not None:
        out.append(f"- Seeds: {format_seeds(info['seeds'])} (a seed s sets {info.get('seed_rule', 'train.seed = s')}; "
                   f"problem.seed stays as configured)")
    else:
        out.append("- Seeds: as in the config (no --seeds)")
    out += ["- Each run is a pure function of its config, `runs/<run_id>/config.toml` "
            "(`metarep run` on it gives the same numbers)", "", "Grid (every combination, times every seed):", ""]
    grid = spec.get("grid", {})
    out += [table(["key", "values"], [[k, ", ".join(format_value(v) for v in vs)] for k, vs in grid.items()])
            if grid else "(no grid: the config alone)", ""]
    return out + ["Command (re-run it to continue an interrupted sweep):", "", "```sh", command_line(spec, directory),
                  "```", "", "<details><summary>Config before the grid (file with --set applied)</summary>", "",
                  "```toml", tomli_w.dumps(spec.get("config", {})).strip(), "```", "", "</details>", ""]


def _best(columns: list[str], rows: list[dict]) -> list[str]:
    best = best_point(columns, rows)
    if best is None:
        return []
    point, risks = best
    where = ", ".join(f"{k} = {fmt(v)}" for k, v in point.items())
    what = "test MSE" if test_score(rows) == "mse" else "test excess risk"
    return [f"Lowest mean {what}: **{where}** ({mean_sd_text(risks)} over {len(risks)} run(s)).", ""]


def _summary_figure(directory: Path, columns: list[str], rows: list[dict]) -> list[str]:
    from metarep.plots import save_figure, summary_figure

    fig = summary_figure(columns, rows)
    if fig is None:
        return []
    save_figure(fig, directory / SUMMARY_FIGURE)
    return [image("test excess risk and perp_norm across the grid", SUMMARY_FIGURE), ""]


def _every_run(directory: Path, rows: list[dict], keys: list[str]) -> list[str]:
    score = test_score(rows)
    headers = [*keys, "seed", "status", "steps", *METRICS, score, f"{PM} se", "run"]
    body = []
    for row in _sorted_rows(rows, keys):
        run_dir = directory / "runs" / row["run_id"]
        figure = run_dir / "metrics.png"
        target = link("figure", rel(figure, directory)) if figure.exists() else \
            link("dir", rel(run_dir, directory)) if run_dir.exists() else ""
        body.append([*(row.get(k) for k in keys), row.get("seed"), row["status"], row.get("steps"),
                     *(row.get(m) for m in METRICS), row.get(score), row.get(f"{score}_se"), target])
    return ["## Every run", "", table(headers, body), ""]


def _troubled(rows: list[dict], keys: list[str]) -> list[str]:
    troubled = [row for row in rows if row["status"] in ("diverged", "failed")]
    if not troubled:
        return []
    return (["## Runs that diverged or failed", ""]
            + [f"- {_run_label(r, keys)} ({r['status']}): {r.get('message') or ''}" for r in troubled] + [""])


def _run_figures(directory: Path, rows: list[dict], keys: list[str]) -> list[str]:
    figures = [(row, directory / "runs" / row["run_id"] / "metrics.png") for row in _sorted_rows(rows, keys)]
    figures = [(row, path) for row, path in figures if path.exists()]
    if not figures:
        return []
    out = ["## Figures of the runs", "", "Tracked norms and the training loss of each run."]
    if len(figures) > MAX_EMBEDDED_FIGURES:  # the first seed of each grid point, up to the limit
        firsts: dict[tuple, tuple[dict, Path]] = {}
        for row, path in figures:
            firsts.setdefault(tuple(row.get(k) for k in keys), (row, path))
        figures = list(firsts.values())[:MAX_EMBEDDED_FIGURES]
        out[-1] += (f" Shown: {len(figures)} of them (the first seed of each grid point); every run's figure "
                    f"is linked in the table above.")
    out.append("")
    for row, path in figures:
        label = _run_label(row, keys)
        out += [f"**{label}**", "", image(label, rel(path, directory)), ""]
    return out


def _results(directory: Path, columns: list[str], rows: list[dict]) -> list[str]:
    if not rows:
        return ["## Results", "", "No run has finished yet.", ""]
    keys = grid_keys_of(columns)
    headers, body = aggregate(columns, rows)
    title = f"mean {PM} sd over seeds" if len({row.get('seed') for row in rows}) > 1 else "one run per grid point"
    out = [f"## Results ({title})", "", ("Final training metrics and the test excess risk after adaptation; "
                                         "statistics over the runs that completed."), "", table(headers, body), ""]
    return (out + _best(columns, rows) + _summary_figure(directory, columns, rows) + _every_run(directory, rows, keys)
            + _troubled(rows, keys) + _run_figures(directory, rows, keys))


def sweep_page(directory: Path) -> str:
    try:
        columns, rows = load_results(directory)
    except ResultsError as err:
        raise ReportError(str(err)) from None
    spec = _read_spec(directory)
    out: list[Any] = _header(directory, spec, rows)
    if spec is not None:
        out += _what_was_run(directory, spec)
    else:
        out += [f"No sweep.toml here: grid keys from the table: {', '.join(grid_keys_of(columns)) or '(none)'}.", ""]
    out += _results(directory, columns, rows)
    out += files_section(directory, [directory / n for n in ("results.csv", "results.sqlite", "sweep.toml")])
    return finish(out)
