"""`metarep sweep`: run a grid of configs times seeds in parallel into one sweep directory."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from metarep.config import ConfigError

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
@click.option("--workers", type=click.IntRange(min=1), help="Runs at once (default: the number of cores).")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Override a config value in every run.")
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="Sweep directory; give an existing one (same arguments) to continue it.")
@click.option("--no-figures", is_flag=True, help="Do not draw metrics.png in each run directory.")
@click.option("--quiet", is_flag=True, help="No progress bar and no results table.")
def sweep(config_path, grid, seeds, backend, workers, overrides, out, no_figures, quiet):
    """Run CONFIG over the cartesian product of the --grid values and --seeds.

    Every run gets its own directory OUT/runs/<run_id>; the results table is OUT/results.sqlite
    (and OUT/results.csv). Exit status: 0 when every run completed or diverged, 1 when some
    failed, 2 for a sweep that cannot start (nothing is written then), 130 when interrupted.
    """
    from metarep import sweep as sweeps
    from metarep.cli import stop_on_signals

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


def _print_table(outcome) -> None:
    from tabulate import tabulate

    from metarep.sweep import display_rows

    if not outcome.rows:
        return
    if len(outcome.rows) > MAX_PRINTED_ROWS:
        from metarep.report import aggregate

        headers, table = aggregate(outcome.columns, outcome.rows)
        click.echo(f"mean +- sd over seeds ({len(outcome.rows)} runs in results.csv):")
        click.echo(tabulate(table, headers=headers, disable_numparse=True))
        return
    headers, table = display_rows(outcome.columns, outcome.rows)
    click.echo(tabulate(table, headers=headers, disable_numparse=True))
