"""Named random streams derived from the config's seeds: no global randomness anywhere."""

from __future__ import annotations

import numpy as np


def _distinct(streams: dict[str, int]) -> dict[str, int]:
    """`streams`, checked: two streams with one id would draw the same numbers (test tasks equal
    to training tasks when test.seed == train.seed)."""
    ids = list(streams.values())
    shared = sorted({i for i in ids if ids.count(i) > 1})
    if shared:
        raise ValueError(f"random streams share the ids {shared}: {streams}")
    return streams


# Every stream's id enters every result drawn from it: an id is never changed or reused.
STREAMS = _distinct({"problem": 0, "init": 1, "train_tasks": 2, "online_tasks": 3, "test_tasks": 4, "fit": 5,
                     "data_split": 6, "data_rows": 7, "probe": 8, "eval_inputs": 9,
                     "validation_tasks": 10, "validation_split": 11, "prior_tasks": 12,
                     "family_tasks": 13, "task_batches": 14})
# Replicate s uses test.seed = TEST_SEED_OFFSET + s: its test tasks never share a stream with
# another replicate's training tasks.
TEST_SEED_OFFSET = 1000


def replicate(seed: int, *, redraw_problem: bool) -> dict[str, int]:
    """The config keys of replicate `seed`: train.seed = s, test.seed = 1000 + s and, when the
    problem itself is redrawn (a new B* per replicate), problem.seed = s."""
    keys = {"train.seed": seed, "test.seed": TEST_SEED_OFFSET + seed}
    return {"problem.seed": seed, **keys} if redraw_problem else keys


def rng(seed: int, stream: str) -> np.random.Generator:
    """An independent generator for `stream`, a pure function of (seed, stream)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), STREAMS[stream]]))
