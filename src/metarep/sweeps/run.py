"""Running a sweep, and continuing one: every run not done yet goes to a backend, and each
result is recorded in the results table as it comes back (only this process writes it).

Re-running an interrupted sweep with the same arguments skips the runs that are done
(summary.json present) and redoes the others, continuing each from its checkpoint when it has
one. `run_grid` is the same from Python, returning the results table as a DataFrame.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from metarep.compute import threads
from metarep.running import pool
from metarep.running import progress as progress_display
from metarep.storage.results import Results, failed_row, row_from_summary
from metarep.sweeps.backends import BACKENDS, failed, import_ray, run_task
from metarep.sweeps.directory import (
    RESULTS_CSV,
    RESULTS_DB,
    RUNS_DIR,
    check_out,
    exclusive,
    prepare_run_dir,
    write_spec,
)
from metarep.sweeps.grid import SweepError
from metarep.sweeps.plan import ConfigSource, PlannedRun, Sweep, plan

if TYPE_CHECKING:
    import pandas


@dataclass
class SweepOutcome:
    out: Path
    columns: list[str]
    rows: list[dict[str, Any]]
    total: int
    skipped: int
    ran: int
    stopped: bool

    def count(self, status: str) -> int:
        return sum(row["status"] == status for row in self.rows)

    @property
    def missing(self) -> int:
        return self.total - len(self.rows)


def _check_backend(backend: str, workers: int | None) -> int:
    """The number of workers (default: the CPUs this process may use); SweepError for bad values."""
    if backend not in BACKENDS:
        raise SweepError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    workers = threads.available() if workers is None else workers
    if workers < 1:
        raise SweepError(f"--workers must be at least 1, got {workers}")
    if backend == "ray":
        import_ray()
    return workers


def run_sweep(sweep: Sweep, out: str | Path, *, backend: str = "local", workers: int | None = None,
              figures: bool = True, progress: bool = True, should_stop: Callable[[], bool] = lambda: False,
              echo: Callable[[str], None] | None = None) -> SweepOutcome:
    """Run every run of `sweep` that is not done yet into `out`, recording each result as it comes back."""
    workers = _check_backend(backend, workers)
    out = Path(out).absolute()
    check_out(out, sweep)  # before anything is written
    out.mkdir(parents=True, exist_ok=True)
    with exclusive(out):
        if not check_out(out, sweep):  # again, now that no other sweep can write here
            write_spec(out, sweep)
        (out / RUNS_DIR).mkdir(exist_ok=True)
        with Results(out / RESULTS_DB, sweep.grid_keys) as table:
            kept = _Kept(out, table, sweep.runs)
            results = pool.kept_results(sweep.runs, kept)
            todo = sum(result is None for result in results)
            stopped = False
            try:
                with progress_display.progress(len(sweep.runs), len(sweep.runs) - todo, progress, unit="run",
                                               desc="sweep") as bar:
                    kept.bar, kept.say = bar, echo or bar.write
                    jobs = [(str(out / RUNS_DIR / run.run_id), figures) for run in sweep.runs]
                    stopped = pool.run_missing(run_task, jobs, results, kept=kept, workers=workers,
                                               should_stop=should_stop, run=BACKENDS[backend],
                                               on_error=lambda i, err: kept.put(i, jobs[i], failed(err)))
            finally:
                table.export_csv(out / RESULTS_CSV)
            return SweepOutcome(out, table.columns, table.rows(), len(sweep.runs), len(sweep.runs) - todo, todo,
                                stopped)


class _Kept:
    """The sweep directory as the place a sweep keeps its results (pool.Kept): a run is done
    when its summary.json says so; each result becomes a row of the results table."""

    def __init__(self, out: Path, table: Results, runs: list[PlannedRun]):
        self.out, self.table, self.runs = out, table, runs
        self.bar: Any = None
        self.say: Callable[[str], None] = print

    def get(self, index: int, run: PlannedRun) -> dict | None:
        """The run's summary when done (recorded if the table lacks it: a sweep killed between
        a run's summary.json and its row); otherwise its directory is made ready and None."""
        summary = prepare_run_dir(self.out / RUNS_DIR / run.run_id, run.config)
        if summary is not None:
            row = self.table.get(run.run_id)
            if row is None or row["status"] != summary["status"]:
                self.table.record(row_from_summary(run.run_id, run.index, run.point, run.seed, summary))
        return summary

    def put(self, index: int, job: Any, result: dict) -> None:
        """One run's result into the table; an interrupted run is left for the next call."""
        run, status = self.runs[index], result["status"]
        if status in ("completed", "diverged"):
            self.table.record(row_from_summary(run.run_id, run.index, run.point, run.seed, result["summary"],
                                               result["wall_s"]))
        elif status == "failed":
            self.table.record(failed_row(run.run_id, run.index, run.point, run.seed, result["message"],
                                         result["wall_s"]))
            self.say(f"failed: {run.label}: {result['message']}")
        else:
            return  # interrupted: it left a checkpoint and is redone on the next call
        self.bar.update(1)


def run_grid(config: ConfigSource, grid: Mapping[str, Sequence[Any]], *, seeds: str | Sequence[int] | None = None,
             backend: str = "local", workers: int | None = None, out: str | Path,
             progress: bool = False, figures: bool = True) -> pandas.DataFrame:
    """Run `config` over the cartesian product of `grid` and `seeds` into the sweep directory `out`
    (as `metarep sweep` does) and return the results table, one row per run, with the columns
    of results.csv.

    config: a TOML file, config data (a nested dict shaped like the file) or a Config.
    grid: {"section.key": [values, ...]}, e.g. {"train.m_in": [5, 10, "inf"]}; the first key
        varies slowest. An empty grid runs the config alone (times the seeds).
    seeds: None (the config's seeds), a list of seeds or a string such as "0-4"; seed s sets
        train.seed = s and test.seed = 1000 + s.
    backend: "local" (a process pool) or "ray"; workers: runs at once (default: the CPUs this
        process may use); progress: show progress; figures: draw each run's metrics.png.

    Calling it again on the same `out` skips the runs that are done and continues the others.
    Bad input raises metarep.config.schema.ConfigError (SweepError for the grid, the seeds or `out`)
    before anything is written. A run that diverges is a row with that status; when some runs
    fail (raise an error), RunsFailed is raised once every run is recorded (its `table` holds
    the rows, failed ones included), so that a script stops with a non-zero exit status.
    """
    import pandas

    outcome = run_sweep(plan(config, grid, seeds), out, backend=backend, workers=workers, figures=figures,
                        progress=progress)
    table = pandas.DataFrame(outcome.rows, columns=outcome.columns)
    failures = [row for row in outcome.rows if row["status"] == "failed"]
    if failures:
        raise RunsFailed(f"{len(failures)} of {outcome.total} runs failed (first: {failures[0]['run_id']}: "
                         f"{failures[0]['message']}); the table is {outcome.out / RESULTS_CSV}, and calling "
                         f"sweep again redoes only the runs not done", table)
    return table


class RunsFailed(RuntimeError):
    """Some runs of a sweep raised an error; `table` is the results table, their rows included."""

    def __init__(self, message: str, table: pandas.DataFrame):
        super().__init__(message)
        self.table = table
