"""The Python API: what `metarep run`, `metarep sweep` and a run directory give, as objects.

    import metarep
    result = metarep.run({"problem": {"d": 20, "k": 3}, "model": {"width": 20},
                          "method": {"name": "fo-anil"}, "train": {"tasks": 1000, "steps": 500}})
    result.metrics          # pandas DataFrame, one row per logged step (metrics.csv)
    result.summary          # summary.json as a dict
    result.figure()         # the run's figure

A config is a nested dict shaped like the TOML file, a path to a TOML file, or a metarep.Config;
it is validated and its memory need checked before anything is allocated, as on the command
line: bad input raises metarep.ConfigError carrying the one line the CLI prints.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from metarep import engine
from metarep.config.files import load as load_config
from metarep.config.schema import Config, ConfigError, validate
from metarep.running.resources import check_memory
from metarep.storage import store

ConfigLike = Mapping[str, Any] | str | PathLike | Config


class GroundTruth(NamedTuple):
    """The synthetic task distribution's truth (MATH 1): B* (d, k), mu* (k,), Sigma* (k, k)."""

    B_star: np.ndarray
    mu_star: np.ndarray
    Sigma_star: np.ndarray


def as_config(config: ConfigLike) -> Config:
    """A validated Config from a dict, a TOML path or a Config (ConfigError if it is not one)."""
    if isinstance(config, Config):
        return config
    if isinstance(config, str | PathLike):
        return load_config(config)
    if isinstance(config, Mapping):
        return validate(copy.deepcopy(dict(config)))
    raise TypeError(f"config must be a dict, a path to a TOML file or a metarep.Config, not {type(config).__name__}")


@dataclass(frozen=True)
class Result:
    """A finished run: its config, metric history, summary and learned arrays.

    params: the learned arrays (e.g. B and w), as in params.npz; problem: the ground truth, or
    None when the tasks had none (real data); run_dir: where it is stored, if anywhere.
    """

    config: Config
    history: tuple[dict, ...]
    summary: dict
    params: dict[str, np.ndarray]
    problem: GroundTruth | None = None
    run_dir: Path | None = None

    @property
    def status(self) -> str:
        return self.summary["status"]

    @property
    def metrics(self):
        """The metric history as a pandas DataFrame: one row per logged step, metrics.csv's columns."""
        import pandas as pd

        return pd.DataFrame(list(self.history), columns=store.history_columns(list(self.history)))

    def figure(self):
        """The run's figure (a matplotlib Figure; a notebook shows it inline)."""
        from metarep.plots import metrics_figure

        return metrics_figure(list(self.history), self.summary, self.config)

    def arrays(self) -> dict[str, np.ndarray]:
        """params.npz's arrays: the learned ones, then the ground truth."""
        return {**self.params, **(self.problem._asdict() if self.problem is not None else {})}

    def save(self, run_dir: str | PathLike, *, figure: bool = True, overwrite: bool = False) -> Path:
        """Write the run directory `metarep run` writes (config.toml, metrics.csv, params.npz,
        summary.json, metrics.png), byte for byte the same files. Like `metarep run --out`, a
        directory holding anything is refused (ConfigError) unless `overwrite` (then an earlier
        run's files are removed first)."""
        path = Path(run_dir)
        if path.exists() and not path.is_dir():
            raise ConfigError(f"{str(path)!r} exists and is not a directory: choose another run_dir")
        if path.exists() and not store.only_temporaries(path):
            if not overwrite:
                raise ConfigError(f"run directory {str(path)!r} is not empty: choose another run_dir, or pass "
                                  "overwrite=True to replace it")
            store.clear_run_dir(path)
        path.mkdir(parents=True, exist_ok=True)
        store.write_config(path / "config.toml", self.config.to_dict())
        store.write_outputs(path, list(self.history), self.arrays(), self.summary, self.config, figure=figure)
        return path

    def __repr__(self) -> str:
        s = self.summary
        where = f", {self.run_dir}" if self.run_dir else ""
        return f"Result({s['method']}, {s['status']}, {s['steps']} steps{where})"


def _split_arrays(arrays: Mapping[str, np.ndarray]) -> tuple[dict, GroundTruth | None]:
    """Learned arrays, and the ground truth (the `*_star` arrays) when there is one."""
    learned = {k: np.asarray(v) for k, v in arrays.items() if not k.endswith("_star")}
    truth = {k: np.asarray(v) for k, v in arrays.items() if k.endswith("_star")}
    return learned, (GroundTruth(**truth) if truth else None)


def _as_json(summary: dict) -> dict:
    """The summary exactly as summary.json holds it (lists, not tuples or arrays; None for NaN)."""
    return json.loads(store.summary_bytes(summary))


def run(config: ConfigLike, *, out: str | PathLike | None = None, progress: bool = False,
        force: bool = False) -> Result:
    """Train and evaluate one experiment; the same numbers as `metarep run`.

    With `out`, the run directory is written exactly as `metarep run --out` writes it
    (checkpoints included, so `metarep run --resume out` continues an interrupted run); a
    non-empty `out` is refused unless `force`. Raises ConfigError for a config that cannot run.
    """
    cfg = as_config(config)
    if out is not None:
        from metarep.running.execute import execute_config

        run_dir = Path(out)
        if run_dir.exists() and not store.only_temporaries(run_dir) and not force:
            raise ConfigError(f"output directory {str(run_dir)!r} is not empty: choose another out, or pass "
                              f"force=True to overwrite it")
        done = execute_config(cfg, run_dir, progress=progress)
        if done.arrays is None or done.summary is None:   # not finished: `load` says what to do with it
            return load(run_dir)
        learned, truth = _split_arrays(done.arrays)
        return Result(cfg, done.history, _as_json(done.summary), learned, truth, run_dir)
    check_memory(cfg)
    from metarep.running.progress import progress as progress_display

    exp = engine.build(cfg)
    with progress_display(cfg.train.steps, 0, progress) as bar:
        state = engine.train(exp, exp.initial_state(), on_progress=lambda step: bar.update(1))
    test = engine.evaluate_final(exp, state)
    with np.errstate(all="ignore"):
        summary = engine.run_summary(exp, state, test)
    learned, truth = _split_arrays(exp.arrays(state.params))
    return Result(cfg, tuple(state.history), _as_json(summary), learned, truth)


def load(run_dir: str | PathLike) -> Result:
    """A finished run directory read back (ConfigError if it is not one)."""
    path = Path(run_dir)
    summary = store.read_summary(path)
    if summary is None:
        raise ConfigError(f"{str(path)!r} is not a finished run directory (no summary.json)"
                          + (f": continue it with `metarep run --resume {path}`" if (path / "config.toml").exists()
                             else ""))
    config = load_config(path / "config.toml")
    with np.load(path / "params.npz", allow_pickle=False) as data:
        learned, truth = _split_arrays({k: data[k] for k in data.files})
    return Result(config, tuple(store.read_metrics(path / "metrics.csv")), summary, learned, truth, path)
