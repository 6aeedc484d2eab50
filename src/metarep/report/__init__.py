"""`metarep report DIR`: one Markdown page, DIR/report.md, to read first.

DIR may be a sweep directory (sweep.toml, results.sqlite or results.csv), a single run
directory (summary.json, metrics.png) or a reproduction directory (any *.md tables, *.csv
files and *.png figures, at the top or one folder down). Figures are linked by paths
relative to DIR, so the page renders wherever DIR is copied. One module per kind of page
(`run_page`, `sweep_page`, `reproduction_page`); `page` holds what they share.
"""

from __future__ import annotations

from pathlib import Path

import click

from metarep.report.page import REPORT, ReportError, kind_of
from metarep.report.reproduction_page import reproduction_page
from metarep.report.run_page import run_page
from metarep.report.sweep_page import sweep_page
from metarep.storage.atomic import atomic_write

PAGES = {"sweep": sweep_page, "run": run_page, "reproduction": reproduction_page}


def write_report(directory: str | Path) -> Path:
    """Write DIR/report.md for a sweep, run or reproduction directory and return its path."""
    directory = Path(directory)
    text = PAGES[kind_of(directory)](directory)
    path = directory / REPORT
    atomic_write(path, text.encode())
    return path


class ReportUsageError(click.ClickException):
    exit_code = 2


@click.command()
@click.argument("directory", metavar="DIR", type=click.Path(path_type=Path))
def report(directory: Path):
    """Write DIR/report.md: a readable page for a sweep, run or reproduction directory."""
    try:
        path = write_report(directory)
    except (ReportError, OSError) as err:
        raise ReportUsageError(str(err)) from None
    click.echo(f"wrote {path}")


__all__ = ["REPORT", "ReportError", "kind_of", "report", "write_report"]
