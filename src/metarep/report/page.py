"""What every report page uses: the kinds of directory, links and images relative to the page,
a Markdown table, and the list of files a page points at."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from metarep.storage.tables import markdown_table

REPORT = "report.md"
CONTENT_SUFFIXES = (".md", ".csv", ".png")


class ReportError(ValueError):
    """A directory the report cannot describe (one line)."""


def table(headers: Sequence[Any], rows: Iterable[Sequence[Any]]) -> str:
    return markdown_table(headers, rows)


def url(path: str) -> str:
    """A relative path as a Markdown link target (spaces and parentheses escaped)."""
    return path.replace(" ", "%20").replace("(", "%28").replace(")", "%29")


def link(text: str, target: str) -> str:
    return f"[{text}]({url(target)})"


def image(alt: str, target: str) -> str:
    return f"![{alt}]({url(target)})"


def rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def files_section(directory: Path, paths: Iterable[Path]) -> list[str]:
    """"## Files" with a link to each of `paths` that exists."""
    present = [p for p in paths if p.exists()]
    if not present:
        return []
    return ["## Files", ""] + [f"- {link(rel(p, directory), rel(p, directory))}" for p in present] + [""]


def finish(lines: list[str]) -> str:
    return "\n".join(lines).rstrip() + "\n"


# ----------------------------------------------------------------------------- directory kinds


def content_files(directory: Path) -> list[Path]:
    """*.md, *.csv, *.png at the top of `directory` and one folder down (report.md and hidden
    files excluded)."""
    found = []
    for pattern in ("*", "*/*"):
        for path in sorted(directory.glob(pattern)):
            if path.is_file() and path.suffix.lower() in CONTENT_SUFFIXES and path.name != REPORT \
                    and not any(part.startswith(".") for part in path.relative_to(directory).parts):
                found.append(path)
    return found


def is_run(directory: Path) -> bool:
    return (directory / "summary.json").exists() or (
        (directory / "config.toml").exists() and ((directory / "metrics.csv").exists()
                                                   or (directory / "checkpoint.npz").exists()))


def is_sweep(directory: Path) -> bool:
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
    if is_sweep(directory):
        return "sweep"
    if is_run(directory):
        return "run"
    if content_files(directory):
        return "reproduction"
    raise ReportError(f"{str(directory)!r} is not a sweep, run or reproduction directory: it has no "
                      f"sweep.toml/results.sqlite/results.csv, no summary.json, and no *.md, *.csv or *.png files")
