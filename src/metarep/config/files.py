"""Config files: TOML read into plain data (errors as ConfigError), `--set section.key=value`
overrides, and `load`: read, override, validate."""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any

from metarep.config.schema import MAX_CONFIG_BYTES, Config, ConfigError, validate


def parse_value(text: str) -> Any:
    """A --set value as a TOML value (numbers, lists, booleans, quoted strings), else a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
    except RecursionError:
        raise ConfigError(f"--set value nested too deeply: {repr(text)[:80]}") from None


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `section.key=value` overrides to plain config data (a new dict)."""
    out = {name: dict(section) if isinstance(section, dict) else section for name, section in data.items()}
    for item in overrides:
        key, sep, value = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not section or not name:
            raise ConfigError(f"--set expects section.key=value, got {item!r}")
        table = out.setdefault(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{section}: must be a table")
        table[name] = parse_value(value.strip())
    return out


def read_toml(path: str | PathLike) -> dict[str, Any]:
    """Parse a TOML file into plain data, with errors as ConfigError."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as err:
        raise ConfigError(f"cannot read config {str(path)!r}: {err.strerror or err}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config {str(path)!r} is larger than {MAX_CONFIG_BYTES // 2**20} MiB: not a config file")
    try:
        return tomllib.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as err:
        raise ConfigError(f"config {str(path)!r} is not UTF-8 text (byte {err.start})") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config {str(path)!r} is not valid TOML: {err}") from None
    except RecursionError:
        raise ConfigError(f"config {str(path)!r}: values are nested too deeply") from None


def load(path: str | PathLike, overrides: Sequence[str] = ()) -> Config:
    """Read, override and validate a config file."""
    return validate(apply_overrides(read_toml(path), list(overrides)))
