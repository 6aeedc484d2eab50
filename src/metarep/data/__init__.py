"""Tasks from real data: a table file or a bundled dataset, split into training and held-out tasks.

config (the [data] section), table (a table into standardised ragged per-task rows), read
(files and bundled datasets), source (training batches drawn from the rows), heldout
(test-time adaptation and scoring on held-out tasks), bundled (the bundled datasets).
"""

from metarep.data.config import DataConfig

__all__ = ["DataConfig"]
