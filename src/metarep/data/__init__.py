"""Tasks from real data: a table file or a bundled dataset, split into training and held-out tasks.

config (the [data] section), table (a table into standardised ragged per-task rows), read
(files and bundled datasets), source (training batches drawn from the rows, the task source),
heldout (test-time adaptation and scoring on held-out tasks), bundled (the bundled datasets),
setup (a config into its task source). Only `config` is imported here: metarep.config.schema reads it.
"""

from metarep.data.config import DataConfig


def table_source(config):
    """The task source of a config whose [data] names a table (metarep.data.setup)."""
    from metarep.data.setup import table_source as build

    return build(config)


__all__ = ["DataConfig", "table_source"]
