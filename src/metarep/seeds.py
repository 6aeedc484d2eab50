"""Named random streams derived from the config's seeds: no global randomness anywhere."""

from __future__ import annotations

import numpy as np

STREAMS = {"problem": 0, "init": 1, "train_tasks": 2, "online_tasks": 3, "test_tasks": 4, "fit": 5, "data_split": 6, "data_rows": 7,
           "probe": 8, "eval_inputs": 9}


def rng(seed: int, stream: str) -> np.random.Generator:
    """An independent generator for `stream`, a pure function of (seed, stream)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), STREAMS[stream]]))
