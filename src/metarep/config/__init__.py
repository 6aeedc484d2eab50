"""The experiment config: the validated schema (`schema`), the checks across sections
(`checks`), TOML loading and `--set` overrides."""

from metarep.config.schema import Config, ConfigError, load, validate

__all__ = ["Config", "ConfigError", "load", "validate"]
