"""`metarep report DIR`: one Markdown page, DIR/report.md, to read first.

DIR may be a sweep directory (sweep.toml, results.sqlite or results.csv), a single run
directory (summary.json, metrics.png) or a reproduction directory (any *.md tables, *.csv
files and *.png figures, at the top or one folder down). Figures are linked by paths
relative to DIR, so the page renders wherever DIR is copied.
"""

from __future__ import annotations

import csv
import json
import math
import re
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import click

from metarep.results import METRICS, ResultsError, grid_keys_of, load_results
from metarep.store import atomic_write

REPORT = "report.md"
SWEEP_MARKERS = ("sweep.toml", "results.sqlite", "results.csv")
SUMMARY_METRICS = ("excess_risk", "perp_norm", "align_norm", "mean_norm", "lambda_rel_err")
MAX_CSV_ROWS = 30
MAX_EMBEDDED_FIGURES = 16
PM = "±"


class ReportError(ValueError):
    """A directory the report cannot describe (one line)."""


# ----------------------------------------------------------------------------- formatting helpers


def _num(value: Any, digits: int = 4) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.{digits}g}"
    return str(value)


def _cell(value: Any) -> str:
    return _num(value).replace("|", "\\|").replace("\n", " ")


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    from tabulate import tabulate

    body = [[_cell(v) for v in row] for row in rows]
    return tabulate(body, headers=[_cell(h) for h in headers], tablefmt="github", disable_numparse=True)


def _mean_sd(values: list[float]) -> str:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return ""
    if len(values) == 1:
        return _num(values[0])
    return f"{_num(statistics.fmean(values))} {PM} {_num(statistics.stdev(values), 2)}"


def _link(text: str, target: str) -> str:
    return f"[{text}]({_url(target)})"


def _image(alt: str, target: str) -> str:
    return f"![{alt}]({_url(target)})"


def _url(path: str) -> str:
    """A relative path as a Markdown link target (spaces and parentheses escaped)."""
    return path.replace(" ", "%20").replace("(", "%28").replace(")", "%29")


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def natural_key(value: Any) -> tuple:
    """Numbers ascending with "inf" after them, then strings; used to order grid values."""
    if value is None:
        return (2, "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, float(value))
    if isinstance(value, str) and value.strip().lower() in ("inf", "infinity"):
        return (0, math.inf)
    return (1, str(value))


# ----------------------------------------------------------------------------- aggregation over seeds


def aggregate(columns: list[str], rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """One row per grid point: the runs' statuses and mean +- sd over seeds of the completed runs,
    ordered by the grid values."""
    keys = grid_keys_of(columns)
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row.get(k) for k in keys), []).append(row)
    headers = [*keys, "runs", "completed", *SUMMARY_METRICS, "rank"]
    table = []
    for point in sorted(groups, key=lambda p: [natural_key(v) for v in p]):
        group = groups[point]
        done = [r for r in group if r["status"] == "completed"]
        other = Counter(r["status"] for r in group if r["status"] != "completed")
        completed = f"{len(done)}" + "".join(f", {n} {status}" for status, n in sorted(other.items()))
        ranks = sorted({r["rank"] for r in done if r.get("rank") is not None})
        rank = "" if not ranks else str(ranks[0]) if len(ranks) == 1 else f"{ranks[0]}-{ranks[-1]}"
        table.append([*(_num(v) for v in point), str(len(group)), completed,
                      *(_mean_sd([r.get(m) for r in done]) for m in SUMMARY_METRICS), rank])
    return headers, table


def _best_point(columns: list[str], rows: list[dict]) -> str | None:
    keys = grid_keys_of(columns)
    if not keys:
        return None
    groups: dict[tuple, list[float]] = {}
    for row in rows:
        if row["status"] == "completed" and row.get("excess_risk") is not None:
            groups.setdefault(tuple(row.get(k) for k in keys), []).append(row["excess_risk"])
    if len(groups) < 2:
        return None
    point, risks = min(groups.items(), key=lambda item: statistics.fmean(item[1]))
    where = ", ".join(f"{k} = {_num(v)}" for k, v in zip(keys, point))
    return f"Lowest mean test excess risk: **{where}** ({_mean_sd(risks)} over {len(risks)} run(s))."


# ----------------------------------------------------------------------------- directory kinds


def _content_files(directory: Path) -> list[Path]:
    """*.md, *.csv, *.png at the top of `directory` and one folder down (report.md excluded)."""
    found = []
    for pattern in ("*", "*/*"):
        for path in sorted(directory.glob(pattern)):
            if path.is_file() and path.suffix.lower() in (".md", ".csv", ".png") and path.name != REPORT \
                    and not any(part.startswith(".") for part in path.relative_to(directory).parts):
                found.append(path)
    return found


def _is_run(directory: Path) -> bool:
    return (directory / "summary.json").exists() or (
        (directory / "config.toml").exists() and ((directory / "metrics.csv").exists()
                                                   or (directory / "checkpoint.npz").exists()))


def _is_sweep(directory: Path) -> bool:
    if (directory / "sweep.toml").exists() or (directory / "results.sqlite").exists():
        return True
    if (directory / "results.csv").exists():
        with open(directory / "results.csv", newline="") as f:
            header = next(csv.reader(f), [])
        return "run_id" in header and "status" in header
    return False


def kind_of(directory: str | Path) -> str:
    """"sweep", "run" or "reproduction"; ReportError for anything else."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ReportError(f"{str(directory)!r} is not a directory")
    if _is_sweep(directory):
        return "sweep"
    if _is_run(directory):
        return "run"
    if _content_files(directory):
        return "reproduction"
    raise ReportError(f"{str(directory)!r} is not a sweep, run or reproduction directory: it has no "
                      f"sweep.toml/results.sqlite/results.csv, no summary.json, and no *.md, *.csv or *.png files")


def write_report(directory: str | Path) -> Path:
    """Write DIR/report.md for a sweep, run or reproduction directory and return its path."""
    directory = Path(directory)
    kind = kind_of(directory)
    text = {"sweep": sweep_page, "run": run_page, "reproduction": reproduction_page}[kind](directory)
    path = directory / REPORT
    atomic_write(path, text.encode())
    return path


# ----------------------------------------------------------------------------- sweep


def _read_spec(directory: Path) -> dict | None:
    import tomllib

    path = directory / "sweep.toml"
    if not path.exists():
        return None
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ReportError(f"{str(path)!r} is not readable TOML: {err}") from None


def _toml_text(data: dict) -> str:
    import tomli_w

    return tomli_w.dumps(data).strip()


def _run_label(row: dict, keys: list[str]) -> str:
    return ", ".join([f"{k}={_num(row.get(k))}" for k in keys] + [f"seed={_num(row.get('seed'))}"])


def sweep_page(directory: Path) -> str:
    from metarep.sweep import command_line, format_seeds, format_value

    try:
        columns, rows = load_results(directory)
    except ResultsError as err:
        raise ReportError(str(err)) from None
    spec = _read_spec(directory)
    keys = grid_keys_of(columns)
    info = (spec or {}).get("sweep", {})
    total = info.get("runs", len(rows))
    config_name = Path(info["config"]).stem if info.get("config") else directory.name
    statuses = Counter(row["status"] for row in rows)
    missing = max(0, total - len(rows))

    out = [f"# Sweep report: {config_name}", ""]
    parts = [f"{statuses.get(s, 0)} {s}" for s in ("completed", "diverged", "failed")]
    if missing:
        parts.append(f"{missing} not finished (continue with the command below)")
    out += [f"{total} runs: {', '.join(parts)}. Directory: `{directory}`.", ""]

    out += ["## What was run", ""]
    if spec is not None:
        sets = info.get("set", [])
        out.append(f"- Config: `{info.get('config')}`" + (f", with `--set {' '.join(sets)}`" if sets else ""))
        if info.get("seeds") is not None:
            rule = info.get("seed_rule", "train.seed = s")
            seeds = format_seeds(info["seeds"])
            out.append(f"- Seeds: {seeds} (a seed s sets {rule}; problem.seed stays as configured)")
        else:
            out.append("- Seeds: as in the config (no --seeds)")
        out.append("- Each run is a pure function of its config, `runs/<run_id>/config.toml` "
                   "(`metarep run` on it gives the same numbers)")
        out += ["", "Grid (every combination, times every seed):", ""]
        grid = spec.get("grid", {})
        if grid:
            out += [_table(["key", "values"], [[k, ", ".join(format_value(v) for v in vs)] for k, vs in grid.items()]),
                    ""]
        else:
            out += ["(no grid: the config alone)", ""]
        out += ["Command (re-run it to continue an interrupted sweep):", "", "```sh", command_line(spec, directory),
                "```", "", "<details><summary>Config before the grid (file with --set applied)</summary>", "",
                "```toml", _toml_text(spec.get("config", {})), "```", "", "</details>", ""]
    else:
        out += [f"No sweep.toml here: grid keys from the table: {', '.join(keys) or '(none)'}.", ""]

    if rows:
        headers, table = aggregate(columns, rows)
        seeds = {row.get("seed") for row in rows}
        title = "mean " + PM + " sd over seeds" if len(seeds) > 1 else "one run per grid point"
        out += [f"## Results ({title})", "",
                ("Final training metrics and the test excess risk after adaptation; statistics over the runs "
                 "that completed."), "", _table(headers, table), ""]
        best = _best_point(columns, rows)
        if best:
            out += [best, ""]
        figure = summary_figure(directory, columns, rows)
        if figure is not None:
            out += [_image("test excess risk and perp_norm across the grid", _rel(figure, directory)), ""]
        out += _every_run(directory, columns, rows, keys)
        troubled = [row for row in rows if row["status"] in ("diverged", "failed")]
        if troubled:
            out += ["## Runs that diverged or failed", ""]
            out += [f"- {_run_label(r, keys)} ({r['status']}): {r.get('message') or ''}" for r in troubled]
            out.append("")
        out += _sweep_figures(directory, rows, keys)
    else:
        out += ["## Results", "", "No run has finished yet.", ""]
    out += _files_section(directory, [directory / n for n in ("results.csv", "results.sqlite", "sweep.toml")])
    return "\n".join(out).rstrip() + "\n"


def _sorted_rows(rows: list[dict], keys: list[str]) -> list[dict]:
    return sorted(rows, key=lambda r: ([natural_key(r.get(k)) for k in keys], natural_key(r.get("seed"))))


def _every_run(directory: Path, columns: list[str], rows: list[dict], keys: list[str]) -> list[str]:
    headers = [*keys, "seed", "status", "steps", *METRICS, "excess_risk", f"{PM} se", "run"]
    table = []
    for row in _sorted_rows(rows, keys):
        run_dir = directory / "runs" / row["run_id"]
        figure = run_dir / "metrics.png"
        link = _link("figure", _rel(figure, directory)) if figure.exists() else \
            _link("dir", _rel(run_dir, directory)) if run_dir.exists() else ""
        table.append([*(row.get(k) for k in keys), row.get("seed"), row["status"], row.get("steps"),
                      *(row.get(m) for m in METRICS), row.get("excess_risk"), row.get("excess_risk_se"), link])
    return ["## Every run", "", _table(headers, table), ""]


def _sweep_figures(directory: Path, rows: list[dict], keys: list[str]) -> list[str]:
    figures = [(row, directory / "runs" / row["run_id"] / "metrics.png") for row in _sorted_rows(rows, keys)]
    figures = [(row, path) for row, path in figures if path.exists()]
    if not figures:
        return []
    out = ["## Figures of the runs", "", "Tracked norms and the training loss of each run (log-log)."]
    if len(figures) > MAX_EMBEDDED_FIGURES:  # the first seed of each grid point, up to the limit
        firsts: dict[tuple, tuple] = {}
        for row, path in figures:
            firsts.setdefault(tuple(row.get(k) for k in keys), (row, path))
        figures = list(firsts.values())[:MAX_EMBEDDED_FIGURES]
        out[-1] += (f" Shown: {len(figures)} of them (the first seed of each grid point); every run's figure "
                    f"is linked in the table above.")
    out.append("")
    for row, path in figures:
        label = _run_label(row, keys)
        out += [f"**{label}**", "", _image(label, _rel(path, directory)), ""]
    return out


SUMMARY_FIGURE = "sweep_summary.png"


def summary_figure(directory: Path, columns: list[str], rows: list[dict]) -> Path | None:
    """DIR/sweep_summary.png: test excess risk and final perp_norm (mean +- sd over seeds) against the
    first grid key, one line per combination of the other keys; None when there is nothing to plot."""
    keys = grid_keys_of(columns)
    done = [r for r in rows if r["status"] == "completed" and r.get("excess_risk") is not None]
    if not keys or not done:
        return None
    import matplotlib.pyplot as plt

    from metarep.plots import save_figure

    x_key, others = keys[0], keys[1:]
    xs = sorted({r.get(x_key) for r in rows}, key=natural_key)
    position = {x: i for i, x in enumerate(xs)}
    series: dict[tuple, list[dict]] = {}
    for row in done:
        series.setdefault(tuple(row.get(k) for k in others), []).append(row)
    replicated = len({r.get("seed") for r in done}) > 1
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, metric, title in zip(axes, ("excess_risk", "perp_norm"),
                                 ("test excess risk", r"final $\|P_\perp B\|_2$")):
        combos = sorted(series, key=lambda c: [natural_key(v) for v in c])
        for i, combo in enumerate(combos):
            shift = (i - (len(combos) - 1) / 2) * min(0.08, 0.4 / len(combos))  # keep error bars apart
            by_x: dict[Any, list[float]] = {}
            for row in series[combo]:
                if row.get(metric) is not None:
                    by_x.setdefault(row.get(x_key), []).append(row[metric])
            points = sorted(by_x, key=natural_key)
            if not points:
                continue
            means = [statistics.fmean(by_x[x]) for x in points]
            sds = [statistics.stdev(by_x[x]) if len(by_x[x]) > 1 else 0.0 for x in points]
            label = ", ".join(f"{k}={_num(v)}" for k, v in zip(others, combo)) or None
            ax.errorbar([position[x] + shift for x in points], means, yerr=sds, marker="o", capsize=3, label=label)
        ax.set_xticks(range(len(xs)), [_num(x) for x in xs])
        ax.set(xlabel=x_key, title=title + (f", mean {PM} sd over seeds" if replicated else ""))
        if metric == "excess_risk" and others:
            ax.legend(fontsize=7)
    path = directory / SUMMARY_FIGURE
    save_figure(fig, path)
    return path


def _files_section(directory: Path, paths: Iterable[Path]) -> list[str]:
    present = [p for p in paths if p.exists()]
    if not present:
        return []
    return ["## Files", ""] + [f"- {_link(_rel(p, directory), _rel(p, directory))}" for p in present] + [""]


# ----------------------------------------------------------------------------- single run


def run_page(directory: Path) -> str:
    summary = None
    if (directory / "summary.json").exists():
        try:
            summary = json.loads((directory / "summary.json").read_text())
        except ValueError as err:
            raise ReportError(f"{str(directory / 'summary.json')!r} is not readable JSON: {err}") from None
    out = [f"# Run report: {directory.resolve().name}", ""]
    if summary is None:
        state = "interrupted (it has a checkpoint)" if (directory / "checkpoint.npz").exists() else "not finished"
        out += [f"The run is {state}: continue it with `metarep run --resume {directory}`.", ""]
    else:
        method, regime = summary.get("method"), summary.get("regime")
        if summary.get("status") == "completed":
            out += [f"**{method}** ({regime} tasks): completed {summary.get('steps')} steps.", ""]
        else:
            out += [f"**{method}** ({regime} tasks): {summary.get('status')}. {summary.get('message', '')}", ""]
        if summary.get("infinite_tasks"):
            out += [f"Infinite tasks: {summary['infinite_tasks']}.", ""]
        out += _run_results(summary)
    figure = directory / "metrics.png"
    if figure.exists():
        out += ["## Figure", "", _image("tracked norms and training loss", "metrics.png"), ""]
    if (directory / "config.toml").exists():
        out += ["## Config", "", "```toml", (directory / "config.toml").read_text().strip(), "```", ""]
    names = ("config.toml", "metrics.csv", "params.npz", "summary.json", "metrics.png", "checkpoint.npz")
    out += _files_section(directory, [directory / n for n in names])
    return "\n".join(out).rstrip() + "\n"


def _run_results(summary: dict) -> list[str]:
    final, test, theory = summary.get("final") or {}, summary.get("test"), summary.get("theory") or {}
    rows = [[key, final.get(key)] for key in ("loss", "align_norm", "sigma_min", "perp_norm", "mean_norm",
                                               "lambda_rel_err") if key in final]
    if "rank" in final:
        rows.append([f"rank (singular values above {final.get('rank_rel_tol', '')} x the largest)", final["rank"]])
    if final.get("singular_values"):
        rows.append(["singular values of B", ", ".join(_num(v, 3) for v in final["singular_values"])])
    out = [f"## Final metrics (step {summary.get('steps')})", "", _table(["quantity", "value"], rows), ""]
    if test:
        rule = test.get("adapt")
        rows = [["test excess risk", f"{_num(test.get('excess_risk'))} {PM} {_num(test.get('excess_risk_se'), 2)}"]]
        if test.get("excess_risk_expected") is not None:
            rows.append(["expected (closed form, MATH 6)", test["excess_risk_expected"]])
        rows += [["adaptation", rule + (f", {test['adapt_steps']} step(s) of size {_num(test.get('alpha'))}"
                                        if rule == "gradient" else "")],
                 ["test tasks x samples", f"{test.get('tasks')} x {test.get('m_test')}"]]
        out += ["## Test (new tasks, MATH 6)", "", _table(["quantity", "value"], rows), ""]
    if theory:
        rows = []
        if theory.get("lambda_star"):
            rows.append(["eigenvalues of Lambda*", ", ".join(_num(v) for v in theory["lambda_star"])])
        if theory.get("lemma2_rate") is not None:
            rows.append(["Lemma 2 rate", theory["lemma2_rate"]])
        if rows:
            out += ["## Theory (MATH 5)", "", _table(["quantity", "value"], rows), ""]
    return out


# ----------------------------------------------------------------------------- reproduction


def _demote(markdown: str, levels: int = 2) -> str:
    """Push headings down `levels` so included pages sit under this page's sections."""
    lines, fenced = [], False
    for line in markdown.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        if not fenced and line.startswith("#"):
            line = "#" * levels + line
        lines.append(line)
    return "\n".join(lines).strip()


def _rebase_links(markdown: str, prefix: str) -> str:
    """Make relative links of a page one folder down relative to this page."""
    if not prefix:
        return markdown

    def fix(match):
        target = match.group(2)
        if re.match(r"^[a-z]+:|^/|^#", target):
            return match.group(0)
        return f"{match.group(1)}({prefix}/{target})"

    return re.sub(r"(!?\[[^\]]*\])\(([^)\s]+)\)", fix, markdown)


def _csv_table(path: Path) -> tuple[str, int]:
    with open(path, newline="") as f:
        reader = list(csv.reader(f))
    if not reader:
        return "(empty)", 0
    header, body = reader[0], reader[1:]

    def fmt(text: str) -> str:
        try:
            return text if float(text).is_integer() and "." not in text and "e" not in text.lower() else \
                _num(float(text))
        except ValueError:
            return text

    return _table(header, [[fmt(c) for c in row] for row in body[:MAX_CSV_ROWS]]), len(body)


def reproduction_page(directory: Path) -> str:
    files = _content_files(directory)
    subdirs = sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))
    runs = [d for d in subdirs if _is_run(d) and not _is_sweep(d)]
    sweeps = [d for d in subdirs if _is_sweep(d)]
    inside = set(runs) | set(sweeps)
    files = [f for f in files if f.parent == directory or f.parent not in inside]
    md = [f for f in files if f.suffix.lower() == ".md"]
    csvs = [f for f in files if f.suffix.lower() == ".csv"]
    pngs = [f for f in files if f.suffix.lower() == ".png"]

    out = [f"# Reproduction report: {directory.resolve().name}", ""]
    out += [f"{len(md)} table page(s), {len(csvs)} CSV file(s), {len(pngs)} figure(s)"
            + (f", {len(runs)} run(s)" if runs else "") + (f", {len(sweeps)} sweep(s)" if sweeps else "")
            + f" in `{directory}`.", ""]
    shown: set[str] = set()
    for page in md:
        rel = _rel(page, directory)
        prefix = _rel(page.parent, directory) if page.parent != directory else ""
        body = _rebase_links(_demote(page.read_text(errors="replace")), prefix)
        shown.update(re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", body))
        out += [f"## {rel}", "", body, ""]
    pngs = [png for png in pngs if _url(_rel(png, directory)) not in shown]  # not twice on the page
    if pngs:
        out += ["## Figures", ""]
        for png in pngs:
            rel = _rel(png, directory)
            out += [f"**{rel}**", "", _image(png.stem, rel), ""]
    paired = {f.with_suffix("") for f in md}
    if csvs:
        out += ["## Data (CSV)", ""]
        for path in csvs:
            rel = _rel(path, directory)
            if path.with_suffix("") in paired:
                out += [f"- {_link(rel, rel)} (the data of {path.stem}.md above)", ""]
                continue
            table, n = _csv_table(path)
            more = f" (first {MAX_CSV_ROWS} of {n} rows)" if n > MAX_CSV_ROWS else ""
            out += [f"### {_link(rel, rel)}{more}", "", table, ""]
    if runs:
        out += ["## Runs", ""]
        table = []
        for run in runs:
            summary = _safe_summary(run)
            test = (summary or {}).get("test") or {}
            figure = run / "metrics.png"
            table.append([_link(run.name, _rel(run, directory)), (summary or {}).get("method", ""),
                          (summary or {}).get("status", "not finished"), (summary or {}).get("steps"),
                          ((summary or {}).get("final") or {}).get("perp_norm"), test.get("excess_risk"),
                          test.get("excess_risk_se"),
                          _link("figure", _rel(figure, directory)) if figure.exists() else ""])
        out += [_table(["run", "method", "status", "steps", "perp_norm", "excess_risk", f"{PM} se", "figure"],
                       table), ""]
    others = [d for d in subdirs if d not in inside and not any(f.parent == d for f in files)]
    if others:
        out += ["## Other folders", ""]
        for folder in others:
            count = sum(1 for f in folder.rglob("*") if f.is_file())
            out.append(f"- {_link(_rel(folder, directory) + '/', _rel(folder, directory))}: {count} file(s)")
        out.append("")
    if sweeps:
        out += ["## Sweeps", ""]
        for sweep in sweeps:
            rel = _rel(sweep, directory)
            page = sweep / REPORT
            target = _link("report.md", _rel(page, directory)) if page.exists() else f"`metarep report {rel}`"
            out.append(f"- {_link(rel, rel)}: see {target}")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def _safe_summary(run: Path) -> dict | None:
    try:
        return json.loads((run / "summary.json").read_text())
    except (OSError, ValueError):
        return None


# ----------------------------------------------------------------------------- command


class ReportUsageError(click.ClickException):
    exit_code = 2


@click.command()
@click.argument("directory", metavar="DIR", type=click.Path(path_type=Path))
def report(directory: Path):
    """Write DIR/report.md: a readable page for a sweep, run or reproduction directory."""
    try:
        path = write_report(directory)
    except (ValueError, OSError) as err:
        raise ReportUsageError(str(err)) from None
    click.echo(f"wrote {path}")


__all__ = ["REPORT", "ReportError", "aggregate", "kind_of", "report", "write_report"]
