"""A planned sweep: the base config, the grid, the seeds and every run they expand to, each
validated (and its memory need checked) before anything runs; its spec (sweep.toml) and the
command line that runs or continues it."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from metarep.config.files import apply_overrides, read_toml
from metarep.config.schema import Config, ConfigError, validate
from metarep.storage.store import config_hash
from metarep.sweeps.grid import (
    SEED_KEYS,
    SEED_RULE,
    Axis,
    SweepError,
    expand,
    format_seeds,
    format_value,
    normalize,
    parse_grid,
    seed_list,
    value_text,
)

RUN_HASH_CHARS = 10
MAX_NAME = 120
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]")

ConfigSource = str | Path | Mapping[str, Any] | Config


@dataclass(frozen=True)
class PlannedRun:
    """One run of the sweep: its place in the grid, its values, its seed and its validated config."""

    index: int
    run_id: str
    point: dict[str, Any]
    seed: int
    config: Config

    @property
    def label(self) -> str:
        return ", ".join([f"{k}={value_text(v)}" for k, v in self.point.items()] + [f"seed={self.seed}"])


@dataclass
class Sweep:
    """A validated sweep: the base config data, the grid, the seeds and every run it expands to.

    `config_path` is the file the base config came from, None for one given as data (the sweep
    directory then keeps it, see metarep.sweeps.directory)."""

    config_path: str | None
    sets: list[str]
    base: dict[str, Any]
    grid: list[Axis]
    seeds: list[int] | None
    runs: list[PlannedRun] = field(default_factory=list)

    @property
    def grid_keys(self) -> list[str]:
        return [axis.key for axis in self.grid]

    def spec(self, config_path: str | None = None) -> dict[str, Any]:
        """The content of sweep.toml (`config_path` names the config file when the sweep has none)."""
        info: dict[str, Any] = {"config": self.config_path or config_path or "", "set": list(self.sets),
                                "runs": len(self.runs)}
        if self.seeds is not None:
            info.update(seeds=list(self.seeds), seed_rule=SEED_RULE)
        return {"sweep": info, "grid": {axis.key: list(axis.values) for axis in self.grid}, "config": self.base}

    def command(self, out: str | Path = "DIR") -> str:
        """The command line that runs (or continues) this sweep."""
        return command_line(self.spec(), out)


def _shell(text: str) -> str:
    return text if re.fullmatch(r"[A-Za-z0-9_./=,:+-]+", text) else "'" + text.replace("'", "'\\''") + "'"


def command_line(spec: dict[str, Any], out: str | Path = "DIR") -> str:
    """The `metarep sweep` command of a sweep spec (the content of sweep.toml)."""
    info = spec.get("sweep", {})
    words = ["metarep sweep", _shell(str(info.get("config") or "CONFIG"))]
    for key, values in spec.get("grid", {}).items():
        words.append("--grid " + _shell(f"{key}={','.join(format_value(v) for v in values)}"))
    if info.get("seeds") is not None:
        words.append(f"--seeds {format_seeds(info['seeds'])}")
    words += [f"--set {_shell(item)}" for item in info.get("set", [])]
    return " ".join(words + [f"--out {_shell(str(out))}"])


def run_hash(config: Config) -> str:
    """The short config hash that makes run ids unique: the first characters of the resolved
    config's SHA-256 (store.config_hash, the one a checkpoint records)."""
    return config_hash(config)[:RUN_HASH_CHARS]


def _labels(grid: list[Axis], with_seed: bool) -> dict[str, str]:
    """Short names (m_in) where they are unambiguous, full keys (train.alpha) where not."""
    names = [axis.name for axis in grid] + (["seed"] if with_seed else [])
    return {axis.key: axis.name if names.count(axis.name) == 1 else axis.key for axis in grid}


def run_id_for(point: dict[str, Any], seed: int | None, config: Config, labels: dict[str, str]) -> str:
    """`<key=value,...>-<hash>`: readable, and unique because the hash covers the whole config."""
    parts = [f"{labels[k]}={_NAME_UNSAFE.sub('_', value_text(v))}" for k, v in point.items()]
    if seed is not None:
        parts.append(f"seed={seed}")
    name = ",".join(parts)[:MAX_NAME]
    return f"{name}-{run_hash(config)}" if name else run_hash(config)


def _check_keys(axes: list[Axis], seeds: list[int] | None, sets: list[str]) -> None:
    """A key is set in one place only: the grid, --set, or (the seed keys) --seeds."""
    set_keys = [item.partition("=")[0].strip() for item in sets]
    if seeds is not None:
        clash = [k for k in SEED_KEYS if k in set_keys or k in (a.key for a in axes)]
        if clash:
            raise SweepError(f"--seeds sets {' and '.join(SEED_KEYS)} ({SEED_RULE}); "
                             f"do not give {clash[0]} in --grid or --set as well")
    both = [axis.key for axis in axes if axis.key in set_keys]
    if both:
        raise SweepError(f"{both[0]} is given in both --grid and --set: keep one")


def _toml_data(data: Mapping[str, Any]) -> dict[str, Any]:
    """Config data as TOML holds it (a copy; what sweep.toml will record)."""
    try:
        return tomllib.loads(tomli_w.dumps(dict(data)))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"config: not representable in TOML ({err})") from None


def base_data(config: ConfigSource, sets: Sequence[str]) -> tuple[str | None, dict[str, Any]]:
    """(the config file's path or None, its data with the --set overrides applied)."""
    if isinstance(config, Config):
        path, data = None, _toml_data(config.to_dict())
    elif isinstance(config, Mapping):
        path, data = None, _toml_data(config)
    else:
        path, data = str(config), read_toml(config)
    base = apply_overrides(data, list(sets))
    for item in sets:
        section, _, name = item.partition("=")[0].strip().partition(".")
        if isinstance(base.get(section), dict) and name in base[section]:
            base[section][name] = normalize(base[section][name])
    return path, base


def _planned(index: int, point: dict[str, Any], seed: int | None, data: dict[str, Any],
             labels: dict[str, str]) -> PlannedRun:
    """One run, validated and checked to fit in memory (SweepError naming the grid point)."""
    from metarep.running.resources import check_memory

    where = ", ".join([f"{k}={value_text(v)}" for k, v in point.items()] + ([f"seed={seed}"] if seed is not None
                                                                              else []))
    try:
        config = validate(data)
        check_memory(config)
    except ConfigError as err:
        raise SweepError(f"grid point {where}: {err}" if where else str(err)) from None
    return PlannedRun(index, run_id_for(point, seed, config, labels), point, config.train.seed, config)


def plan(config: ConfigSource, grid: Iterable[str | Axis] | Mapping[str, Sequence[Any]] = (),
         seeds: str | Sequence[int] | None = None, sets: Sequence[str] = ()) -> Sweep:
    """Parse and validate a whole sweep before anything runs; SweepError/ConfigError otherwise.

    `config`: a TOML file, config data (nested dict shaped like the file) or a Config; `grid`:
    --grid strings or {"section.key": [values]}; `seeds`: "0-4", a list, or None (the config's
    own seeds); `sets`: --set overrides applied to the config before the grid."""
    axes = parse_grid(grid)
    seed_values = seed_list(seeds)
    _check_keys(axes, seed_values, list(sets))
    path, base = base_data(config, sets)
    sweep = Sweep(path, list(sets), base, axes, seed_values)
    labels = _labels(axes, seed_values is not None)
    seen: dict[str, PlannedRun] = {}
    for index, (point, seed, data) in enumerate(expand(base, axes, seed_values)):
        run = _planned(index, point, seed, data, labels)
        digest = config_hash(run.config)
        if digest in seen:
            raise SweepError(f"grid points {seen[digest].label} and {run.label} give the same config")
        seen[digest] = run
        sweep.runs.append(run)
    return sweep
