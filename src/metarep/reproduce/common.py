"""What the reproduction commands share: layered experiment files, seeds, the process pool
(metarep.running.pool), batched population runs, log-spaced traces and small CSV/Markdown writers.

An experiment file is a config (sections [problem], [model], [train], [test]) plus two
optional tables that are not part of the config: a metadata table ([row] or [study]) and
[quick], the overrides `--quick` applies (the same sections, e.g. [quick.train]).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from metarep import seeds
from metarep.config.files import read_toml
from metarep.config.schema import SECTIONS, Config, ConfigError, validate
from metarep.engine import evaluate_final, run_summary, train
from metarep.models import linear_batch
from metarep.running.pool import parallel_map  # noqa: F401 - re-exported for the reproductions
from metarep.storage import tables
from metarep.storage.atomic import atomic_write
from metarep.storage.results import mean_std  # noqa: F401 - re-exported for the reproductions

ENV_EXPERIMENTS = "METAREP_EXPERIMENTS"


# ----------------------------------------------------------------------------------------
# Experiment files
# ----------------------------------------------------------------------------------------

def experiments_dir(override: str | Path | None = None) -> Path:
    """The folder of experiment files: `override`, $METAREP_EXPERIMENTS, or the repository's
    experiments/ next to src/."""
    path = Path(override or os.environ.get(ENV_EXPERIMENTS) or Path(__file__).resolve().parents[3] / "experiments")
    if not path.is_dir():
        raise ConfigError(f"experiments folder {str(path)!r} not found: pass --experiments DIR "
                          f"(the repository's experiments/) or set {ENV_EXPERIMENTS}")
    return path


def deep_merge(base: dict, over: dict) -> dict:
    """A new dict: `over` on top of `base`, tables merged key by key."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def split_layer(data: dict) -> tuple[dict, dict, dict]:
    """(config sections, metadata tables, quick overrides) of one experiment file."""
    config = {k: v for k, v in data.items() if k in SECTIONS}
    quick = data.get("quick", {})
    meta = {k: v for k, v in data.items() if k not in SECTIONS and k != "quick"}
    return config, meta, quick


def compose(paths: Sequence[Path], *, quick: bool) -> tuple[dict, dict]:
    """Merge experiment files in order, later files winning; with `quick`, each file's [quick]
    table is applied right after that file (so a row's own keys override the base's quick
    ones, and its own [quick] overrides both). Returns (config data, merged metadata)."""
    config: dict = {}
    meta: dict = {}
    for path in paths:
        c, m, q = split_layer(read_toml(path))
        config, meta = deep_merge(config, c), deep_merge(meta, m)
        if quick:
            qc, qm, _ = split_layer(q)
            config, meta = deep_merge(config, qc), deep_merge(meta, qm)
    return config, meta


def with_seed(data: dict, seed: int) -> dict:
    """Seed s: problem.seed = s (B*), train.seed = s (init, training tasks), test.seed = 1000 + s."""
    over: dict[str, dict] = {}
    for key, value in seeds.replicate(seed, redraw_problem=True).items():
        section, name = key.split(".")
        over.setdefault(section, {})[name] = value
    return deep_merge(data, over)


def seeded_config(data: dict, seed: int) -> Config:
    return validate(with_seed(data, seed))


def load_study(name: str, *, quick: bool, experiments: str | Path | None = None) -> tuple[dict, dict]:
    """experiments/studies/<name>.toml composed (config data, [study] table)."""
    path = experiments_dir(experiments) / "studies" / f"{name}.toml"
    if not path.exists():
        raise ConfigError(f"study file {str(path)!r} not found")
    data, meta = compose([path], quick=quick)
    return data, meta.get("study", {})


# ----------------------------------------------------------------------------------------
# Training traces
# ----------------------------------------------------------------------------------------

def log_points(steps: int, n: int = 120) -> list[int]:
    """About n steps from 0 to `steps`, log-spaced (every step at the start), both ends included."""
    if steps <= 0:
        return [0]
    pts = np.unique(np.round(np.logspace(0, math.log10(steps), n)).astype(int))
    return sorted({0, *pts.tolist(), steps})


def trace(exp, points: Iterable[int]):
    """Train `exp` for train.steps outer steps with the one training loop, measuring at `points`;
    returns the TrainState (status 'completed' or 'diverged', stopped there)."""
    return train(exp, exp.initial_state(), points=points)


# ----------------------------------------------------------------------------------------
# Batched population runs (exact infinite-task FO-ANIL, MATH 4)
# ----------------------------------------------------------------------------------------

def batchable(config: Config) -> bool:
    """Runs whose method advances exact infinite-task runs in a batch."""
    return config.train.tasks == "inf" and config.method_spec.population_batch


def population_batch(configs: Sequence[Config], *, points: Iterable[int] | None = None,
                     evaluate_test: bool = True) -> list[tuple[Any, Any, dict]]:
    """Exact infinite-task runs of many configs at once (seeds, step sizes), through the one
    training loop: [(experiment, state, summary)], the same as engine.run(config) for each
    (metarep.models.linear_batch)."""
    batch = linear_batch.population_batch(configs)
    T = configs[0].train.steps
    state = train(batch, batch.initial_state(), points=sorted({0, T, *(points or ())}))
    out = []
    for exp, run in zip(batch.exps, batch.split(state), strict=True):
        test = evaluate_final(exp, run) if evaluate_test else None
        out.append((exp, run, run_summary(exp, run, test)))
    return out


# ----------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------

def csv_bytes(rows: Sequence[dict], columns: Sequence[str] | None = None) -> bytes:
    """Rows as CSV (metarep.storage.tables.csv_text); columns default to the first row's keys."""
    return tables.csv_text(rows, list(columns or (list(rows[0]) if rows else []))).encode()


def write_csv(path: Path, rows: Sequence[dict], columns: Sequence[str] | None = None) -> None:
    atomic_write(Path(path), csv_bytes(rows, columns))


def write_text(path: Path, text: str) -> None:
    atomic_write(Path(path), text.encode())


def fmt(x, digits: int = 3) -> str:
    """A number for a table (metarep.storage.tables.fmt, 3 digits, "-" for missing; integers too as floats)."""
    return tables.fmt(None if x is None else float(x), digits, missing="-")


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """metarep.storage.tables.markdown_table of cells already written as text, and a blank line after."""
    return tables.markdown_table(header, [[str(c) for c in row] for row in rows]) + "\n"


def machine_line(workers: int) -> str:
    """Cores, workers and the load average when the command started (other processes count)."""
    try:
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "n/a"
    return f"{os.cpu_count()} cores, {workers} worker process(es), load average at start {load}"


def adapt_description(config: Config) -> str:
    """What a run adapts on a new task, in words (the features: the method's declaration)."""
    rule, te = config.adapt_rule, config.test
    truth = config.method_spec.needs_truth
    on = "X B*" if rule == "bayes" and truth else config.method_spec.features
    if rule == "gradient":
        steps = te.adapt_steps
        return f"head: {steps} gradient step{'s' if steps != 1 else ''} of size {config.test_alpha:g} from w"
    if rule == "ridge":
        return f"head: ridge (lambda {te.ridge:g}) on {on}"
    if rule == "lstsq":
        return f"head: least squares (min-norm) on {on}"
    if rule == "bayes" and truth:
        return f"head: Bayes posterior mean on {on} (knows mu*, Sigma*, sigma)"
    if rule == "bayes":
        return f"head: posterior mean (BLUP) on {on} under the prior fitted to the training tasks"
    return rule
