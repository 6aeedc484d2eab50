"""The command line: `metarep run|methods|sweep|reproduce|report|bench` (`app`), the sweep
command (`sweep`). `python -m metarep.cli` is the `metarep` command."""

from metarep.cli.app import main

__all__ = ["main"]
