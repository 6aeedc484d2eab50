"""The experiment config: the validated schema (`schema`), the checks across sections
(`checks`), TOML files and `--set` overrides (`files`)."""

from metarep.config.files import load
from metarep.config.schema import Config, ConfigError, validate

__all__ = ["Config", "ConfigError", "load", "validate"]
