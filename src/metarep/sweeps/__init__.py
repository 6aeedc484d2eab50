"""Sweeps: the cartesian product of grid values and seeds, each run in its own directory.

A sweep directory DIR holds

    sweep.toml        the sweep's spec: the config (file content with --set applied), the grid, the seeds
    base.toml         the base config, for a sweep whose config was given as data (run_grid)
    runs/<run_id>/    one run directory per grid point and seed (config.toml, metrics.csv, summary.json, ...)
    results.sqlite    the results table, one row per run (metarep.storage.results)
    results.csv       the same table as CSV, written at the end

Every run is a pure function of its config, so the numbers do not depend on the backend, the
number of workers or the order in which runs finish.

The modules, in the order a sweep goes through them: `grid` (axes, seeds, expansion), `plan`
(the validated runs, their ids, the spec and command line), `directory` (sweep.toml, the lock,
each run's directory), `backends` (the local process pool of metarep.running.pool, Ray), `run` (running
and continuing a sweep through metarep.running.pool's kept results; `run_grid` from Python).
"""

from metarep.sweeps.backends import BACKENDS, one_line, run_one, run_ray, run_task
from metarep.sweeps.directory import (
    BASE_FILE,
    LOCK_FILE,
    RESULTS_CSV,
    RESULTS_DB,
    RUNS_DIR,
    SPEC_FILE,
    check_out,
    read_spec,
)
from metarep.sweeps.grid import (
    SEED_KEYS,
    SEED_RULE,
    TEST_SEED_OFFSET,
    Axis,
    SweepError,
    expand,
    format_seeds,
    format_value,
    inline_toml,
    parse_axis,
    parse_grid,
    parse_seeds,
    split_values,
)
from metarep.sweeps.plan import PlannedRun, Sweep, command_line, plan, run_hash, run_id_for
from metarep.sweeps.run import RunsFailed, SweepOutcome, run_grid, run_sweep

__all__ = [
    "BACKENDS", "BASE_FILE", "LOCK_FILE", "RESULTS_CSV", "RESULTS_DB", "RUNS_DIR", "SEED_KEYS", "SEED_RULE",
    "SPEC_FILE", "TEST_SEED_OFFSET", "Axis", "PlannedRun", "RunsFailed", "Sweep", "SweepError", "SweepOutcome",
    "check_out", "command_line", "expand", "format_seeds", "format_value", "inline_toml", "one_line", "parse_axis",
    "parse_grid", "parse_seeds", "plan", "read_spec", "run_grid", "run_hash", "run_id_for", "run_one",
    "run_ray", "run_sweep", "run_task", "split_values",
]
