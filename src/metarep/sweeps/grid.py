"""The grid: axes (a config key and its values), their parsing from the command line or from
Python, the seeds, and the expansion of a base config into one config per grid point and seed.

Seeds: a seed s sets train.seed = s (initialisation, training tasks, the online task stream)
and test.seed = 1000 + s (the test tasks); problem.seed (B*, mu*, Sigma*) stays as the config
gives it unless the grid names it.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import tomli_w

from metarep.config.files import parse_value
from metarep.config.schema import SECTIONS, ConfigError
from metarep.seeds import TEST_SEED_OFFSET, replicate

SEED_KEYS = ("train.seed", "test.seed")
SEED_RULE = f"train.seed = s, test.seed = {TEST_SEED_OFFSET} + s"
_KEY = re.compile(r"^([a-z_][a-z0-9_]*)\.([a-z_][a-z0-9_]*)$")


class SweepError(ConfigError):
    """A sweep that cannot start as asked (one line; the CLI exits with status 2)."""


@dataclass(frozen=True)
class Axis:
    """One grid axis (one --grid option): a config key and the values it takes, in order."""

    key: str
    values: tuple

    @property
    def section(self) -> str:
        return self.key.partition(".")[0]

    @property
    def name(self) -> str:
        return self.key.partition(".")[2]


def normalize(value: Any) -> Any:
    """TOML reads a bare `inf` as a float; the config spells infinity as the string "inf"."""
    if isinstance(value, float) and math.isinf(value) and value > 0:
        return "inf"
    return value


def _same(a: Any, b: Any) -> bool:
    numbers = isinstance(a, (int, float)) and isinstance(b, (int, float))
    return (type(a) is type(b) or (numbers and not isinstance(a, bool) and not isinstance(b, bool))) and a == b


def make_axis(key: str, values: Sequence[Any], shown: Sequence[str] | None = None) -> Axis:
    """An Axis after checking the key names a config section and no value is given twice;
    `shown` are the values as the user wrote them, for the message."""
    match = _KEY.match(key)
    if not match:
        raise SweepError(f"grid key {key!r} is not of the form section.key")
    if match.group(1) not in SECTIONS:
        raise SweepError(f"--grid {key}: {match.group(1)!r} is not a config section ({', '.join(SECTIONS)})")
    if not values:
        raise SweepError(f"--grid {key}: no values")
    values = [normalize(v) for v in values]
    for i, value in enumerate(values):
        if any(_same(value, other) for other in values[:i]):
            raise SweepError(f"--grid {key}: value {(shown or [value_text(v) for v in values])[i]} is given twice")
    return Axis(key, tuple(values))


def split_values(text: str) -> list[str]:
    """Split a --grid value list at the commas outside brackets, braces and quotes."""
    parts: list[str] = []
    current: list[str] = []
    depth, quote = 0, ""
    for ch in text:
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    parts.append("".join(current))
    return [p.strip() for p in parts]


def parse_axis(text: str) -> Axis:
    """`section.key=v1,v2,...` with each value read as a TOML value (config.parse_value)."""
    key, sep, values = text.partition("=")
    key = key.strip()
    if not sep or not _KEY.match(key):
        raise SweepError(f"--grid expects section.key=value1,value2,...; got {text!r}")
    items = split_values(values)
    if any(not item for item in items):
        raise SweepError(f"--grid {key}: empty value in {values!r}")
    return make_axis(key, [parse_value(item) for item in items], items)


def parse_grid(items: Iterable[str | Axis] | Mapping[str, Sequence[Any]]) -> list[Axis]:
    """All axes, from --grid strings, Axis objects or a {"section.key": [values]} mapping; a
    key may appear once."""
    if isinstance(items, Mapping):
        axes = [make_axis(key, list(values)) for key, values in items.items()]
    else:
        axes = [item if isinstance(item, Axis) else parse_axis(item) for item in items]
    keys = [axis.key for axis in axes]
    for key in keys:
        if keys.count(key) > 1:
            raise SweepError(f"--grid {key} is given twice: list all its values in one --grid")
    return axes


def parse_seeds(text: str) -> list[int]:
    """Seeds from "0-4" (inclusive range), "1,3", or a mix such as "0-2,7"."""
    seeds: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        match = re.fullmatch(r"(\d+)\s*-\s*(\d+)", part) or re.fullmatch(r"(\d+)", part)
        if not match:
            raise SweepError(f"--seeds expects non-negative integers and ranges such as 0-4 or 1,3; got {text!r}")
        lo = int(match.group(1))
        hi = int(match.group(2)) if match.lastindex == 2 else lo
        if hi < lo:
            raise SweepError(f"--seeds range {part!r} is empty (write it low-high)")
        seeds.extend(range(lo, hi + 1))
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise SweepError(f"--seeds {text!r} repeats seed {repeated[0]}")
    return seeds


def seed_list(seeds: str | Sequence[int] | None) -> list[int] | None:
    """The seeds of a sweep, from "0-4", a list of integers, or None (the config's own seeds)."""
    if seeds is None:
        return None
    found = parse_seeds(seeds) if isinstance(seeds, str) else list(seeds)
    if not found:
        raise SweepError("--seeds names no seed")
    if any(not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in found):
        raise SweepError(f"seeds must be non-negative integers, got {found}")
    if len(set(found)) < len(found):
        raise SweepError(f"seeds {found} repeat a seed")
    return found


def format_seeds(seeds: Sequence[int]) -> str:
    """[0, 1, 2, 5] -> "0-2,5"."""
    parts: list[str] = []
    run: list[int] = []
    for s in [*seeds, None]:
        if run and (s is None or s != run[-1] + 1):
            parts.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
            run = []
        if s is not None:
            run.append(s)
    return ",".join(parts)


def value_text(value: Any) -> str:
    """A grid value in a label or a run id: lists and tables as compact JSON."""
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, separators=(",", ":"))
    return repr(value) if isinstance(value, float) else str(value)


def inline_toml(value: Any) -> str:
    """A TOML value on one line (arrays and tables inline)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(inline_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {inline_toml(v)}" for k, v in value.items()) + "}"
    return tomli_w.dumps({"v": value}).partition("=")[2].strip()


def format_value(value: Any) -> str:
    """A value as written on the command line: bare where parse_value reads it back as it is."""
    if isinstance(value, str) and value and value.strip() == value and "," not in value \
            and normalize(parse_value(value)) == value:
        return value
    return inline_toml(value)


def set_key(data: dict[str, Any], key: str, value: Any) -> None:
    """data[section][name] = value for key "section.name"."""
    section, _, name = key.partition(".")
    table = data.setdefault(section, {})
    if not isinstance(table, dict):
        raise SweepError(f"{section}: must be a table")
    table[name] = value


def expand(base: dict[str, Any], grid: list[Axis],
           seeds: list[int] | None) -> Iterator[tuple[dict[str, Any], int | None, dict[str, Any]]]:
    """Yield (point, seed or None, config data) over the cartesian product: the first grid key
    varies slowest, the seeds fastest."""
    for values in itertools.product(*(axis.values for axis in grid)):
        point = dict(zip((axis.key for axis in grid), values))
        for seed in (seeds if seeds is not None else [None]):
            data = {name: dict(section) if isinstance(section, dict) else section for name, section in base.items()}
            for key, value in point.items():
                set_key(data, key, value)
            if seed is not None:
                for key, value in replicate(seed, redraw_problem=False).items():
                    set_key(data, key, value)
            yield point, seed, data
