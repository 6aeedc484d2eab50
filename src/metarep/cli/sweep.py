"""`metarep sweep`: run a grid of configs times seeds in parallel into one sweep directory."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from metarep.config.schema import ConfigError
from metarep.storage.tables import fmt

MAX_PRINTED_ROWS = 40


class SweepUsageError(click.ClickException):
    exit_code = 2


@click.command()
@click.argument("config_path", metavar="CONFIG", type=click.Path(path_type=Path))
@click.option("--grid", "grid", multiple=True, metavar="SECTION.KEY=V1,V2,...",
              help="Values of one config key (TOML values); repeat for a cartesian product.")
@click.option("--seeds", metavar="SEEDS", help="Seeds, e.g. 0-4 or 1,3: seed s sets train.seed = s and "
                                                "test.seed = 1000 + s.")
@click.option("--backend", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: a process pool; ray: Ray tasks ($RAY_ADDRESS, else a local Ray).")
@click.option("--workers", type=click.IntRange(min=1), help="Runs at once (default: the CPUs this process may use).")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Override a config value in every run.")
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="Sweep directory; give an existing one (same arguments) to continue it.")
@click.option("--no-figures", is_flag=True, help="Do not draw metrics.png in each run directory.")
@click.option("--quiet", is_flag=True, help="No progress display and no results table.")
def sweep(config_path, grid, seeds, backend, workers, overrides, out, no_figures, quiet):
    """Run CONFIG over the cartesian product of the --grid values and --seeds.

    Every run gets its own directory OUT/runs/<run_id>; the results table is OUT/results.sqlite
    (and OUT/results.csv). Exit status: 0 when every run completed or diverged, 1 when some
    failed, 2 for a sweep that cannot start (nothing is written then), 130 when interrupted.
    """
    from metarep import sweeps
    from metarep.cli.app import stop_on_signals

    try:
        spec = sweeps.plan(config_path, grid, seeds, overrides)
        with stop_on_signals() as received:
            outcome = sweeps.run_sweep(spec, out, backend=backend, workers=workers, figures=not no_figures,
                                       progress=not quiet, should_stop=lambda: bool(received))
    except ConfigError as err:
        raise SweepUsageError(str(err)) from None
    if not quiet:
        _print_table(outcome)
    counts = ", ".join(f"{outcome.count(s)} {s}" for s in ("completed", "diverged", "failed"))
    click.echo(f"{outcome.total} runs ({counts}; {outcome.skipped} already done); results in "
               f"{outcome.out / sweeps.RESULTS_CSV}; `metarep report {out}` writes a summary page", err=True)
    if outcome.stopped or outcome.missing:
        click.echo(f"interrupted with {outcome.missing} runs to go: run the same command again to continue", err=True)
        sys.exit(130)
    if outcome.count("failed"):
        sys.exit(1)


def display_rows(columns: list[str], rows: list[dict[str, Any]], *,
                 drop: Sequence[str] = ("run_id", "wall_s", "message")) -> tuple[list[str], list[list[str]]]:
    """(headers, table) for printing: metrics to 4 significant digits, missing values blank,
    columns with no value in any row left out."""
    shown = [c for c in columns if c not in drop and any(row.get(c) is not None for row in rows)]
    return shown, [[fmt(row.get(c)) for c in shown] for row in rows]


def _print_table(outcome) -> None:
    from tabulate import tabulate

    from metarep.storage.results import aggregate

    if not outcome.rows:
        return
    if len(outcome.rows) > MAX_PRINTED_ROWS:
        headers, table = aggregate(outcome.columns, outcome.rows)
        click.echo(f"mean +- sd over seeds ({len(outcome.rows)} runs in results.csv):")
    else:
        headers, table = display_rows(outcome.columns, outcome.rows)
    click.echo(tabulate(table, headers=headers, disable_numparse=True))
