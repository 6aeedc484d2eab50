"""The page of a reproduction directory: its Markdown pages included (headings pushed down,
links made relative to this page), the figures they do not show, the CSV files as tables,
and the run and sweep directories inside it."""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from metarep.report.page import REPORT, content_files, finish, image, is_run, is_sweep, link, rel, table, url
from metarep.storage.results import PM
from metarep.storage.tables import fmt

MAX_CSV_ROWS = 30
_IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")


@dataclass
class Contents:
    """What a reproduction directory holds, sorted into what the page shows."""

    directory: Path
    pages: list[Path] = field(default_factory=list)
    csvs: list[Path] = field(default_factory=list)
    pngs: list[Path] = field(default_factory=list)
    runs: list[Path] = field(default_factory=list)
    sweeps: list[Path] = field(default_factory=list)
    others: list[Path] = field(default_factory=list)

    @classmethod
    def of(cls, directory: Path) -> Contents:
        subdirs = sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))
        out = cls(directory, runs=[d for d in subdirs if is_run(d) and not is_sweep(d)],
                  sweeps=[d for d in subdirs if is_sweep(d)])
        inside = set(out.runs) | set(out.sweeps)
        files = [f for f in content_files(directory) if f.parent == directory or f.parent not in inside]
        for f in files:
            {".md": out.pages, ".csv": out.csvs, ".png": out.pngs}[f.suffix.lower()].append(f)
        out.others = [d for d in subdirs if d not in inside and not any(f.parent == d for f in files)]
        return out

    def counts(self) -> str:
        text = f"{len(self.pages)} table page(s), {len(self.csvs)} CSV file(s), {len(self.pngs)} figure(s)"
        text += f", {len(self.runs)} run(s)" if self.runs else ""
        return text + (f", {len(self.sweeps)} sweep(s)" if self.sweeps else "")


def demote(markdown: str, levels: int = 2) -> str:
    """Push headings down `levels` so included pages sit under this page's sections."""
    lines, fenced = [], False
    for line in markdown.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        if not fenced and line.startswith("#"):
            line = "#" * levels + line
        lines.append(line)
    return "\n".join(lines).strip()


def rebase_links(markdown: str, prefix: str) -> str:
    """Make relative links of a page one folder down relative to this page."""
    if not prefix:
        return markdown

    def fix(match: re.Match) -> str:
        target = match.group(2)
        if re.match(r"^[a-z]+:|^/|^#", target):
            return match.group(0)
        return f"{match.group(1)}({prefix}/{target})"

    return re.sub(r"(!?\[[^\]]*\])\(([^)\s]+)\)", fix, markdown)


def _number_text(text: str) -> str:
    """A CSV cell for reading: integers as written, other numbers to 4 significant digits."""
    try:
        value = float(text)
    except ValueError:
        return text
    return text if value.is_integer() and "." not in text and "e" not in text.lower() else fmt(value)


def csv_table(path: Path) -> tuple[str, int]:
    """The first MAX_CSV_ROWS rows of a CSV file as a Markdown table, and its number of rows."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return "(empty)", 0
    header, body = rows[0], rows[1:]
    return table(header, [[_number_text(c) for c in row] for row in body[:MAX_CSV_ROWS]]), len(body)


def _pages(c: Contents, shown: set[str]) -> list[str]:
    """Each Markdown page, included; the figures it shows are added to `shown`."""
    out: list[str] = []
    for page in c.pages:
        prefix = rel(page.parent, c.directory) if page.parent != c.directory else ""
        body = rebase_links(demote(page.read_text(errors="replace")), prefix)
        shown.update(_IMAGE.findall(body))
        out += [f"## {rel(page, c.directory)}", "", body, ""]
    return out


def _figures(c: Contents, shown: set[str]) -> list[str]:
    pngs = [png for png in c.pngs if url(rel(png, c.directory)) not in shown]  # not twice on the page
    if not pngs:
        return []
    out = ["## Figures", ""]
    for png in pngs:
        out += [f"**{rel(png, c.directory)}**", "", image(png.stem, rel(png, c.directory)), ""]
    return out


def _data(c: Contents) -> list[str]:
    if not c.csvs:
        return []
    paired = {f.with_suffix("") for f in c.pages}
    out = ["## Data (CSV)", ""]
    for path in c.csvs:
        name = rel(path, c.directory)
        if path.with_suffix("") in paired:
            out += [f"- {link(name, name)} (the data of {path.stem}.md above)", ""]
            continue
        body, n = csv_table(path)
        more = f" (first {MAX_CSV_ROWS} of {n} rows)" if n > MAX_CSV_ROWS else ""
        out += [f"### {link(name, name)}{more}", "", body, ""]
    return out


def _summary(run: Path) -> dict:
    try:
        return json.loads((run / "summary.json").read_text())
    except (OSError, ValueError):
        return {}


def _runs(c: Contents) -> list[str]:
    if not c.runs:
        return []
    body = []
    for run in c.runs:
        summary = _summary(run)
        test, final = summary.get("test") or {}, summary.get("final") or {}
        figure = run / "metrics.png"
        body.append([link(run.name, rel(run, c.directory)), summary.get("method", ""),
                     summary.get("status", "not finished"), summary.get("steps"), final.get("perp_norm"),
                     test.get("excess_risk"), test.get("excess_risk_se"),
                     link("figure", rel(figure, c.directory)) if figure.exists() else ""])
    headers = ["run", "method", "status", "steps", "perp_norm", "excess_risk", f"{PM} se", "figure"]
    return ["## Runs", "", table(headers, body), ""]


def _others(c: Contents) -> list[str]:
    if not c.others:
        return []
    out = ["## Other folders", ""]
    for folder in c.others:
        count = sum(1 for f in folder.rglob("*") if f.is_file())
        out.append(f"- {link(rel(folder, c.directory) + '/', rel(folder, c.directory))}: {count} file(s)")
    return out + [""]


def _sweeps(c: Contents) -> list[str]:
    if not c.sweeps:
        return []
    out = ["## Sweeps", ""]
    for sweep in c.sweeps:
        name, page = rel(sweep, c.directory), sweep / REPORT
        target = link("report.md", rel(page, c.directory)) if page.exists() else f"`metarep report {name}`"
        out.append(f"- {link(name, name)}: see {target}")
    return out + [""]


def reproduction_page(directory: Path) -> str:
    c = Contents.of(directory)
    shown: set[str] = set()
    out = [f"# Reproduction report: {directory.resolve().name}", "", f"{c.counts()} in `{directory}`.", ""]
    out += _pages(c, shown)
    out += _figures(c, shown) + _data(c) + _runs(c) + _others(c) + _sweeps(c)
    return finish(out)
