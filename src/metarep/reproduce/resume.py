"""Long studies that survive an interruption: each finished job's result is kept in a folder,
one JSON file per job named by a hash of the job, and a rerun of the same command takes the
kept results instead of recomputing them. The folder is removed once the study has written
its outputs, so a finished study always reruns from scratch."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from metarep.atomic import atomic_write
from metarep.reproduce.common import parallel_map


def job_key(job: dict) -> str:
    """A name for the job: the hash of its JSON text (configs, points and tags included)."""
    return hashlib.sha256(json.dumps(job, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _number(value):
    """numpy scalars as Python numbers (json's fallback)."""
    return value.item()


def resumable_map(fn: Callable, jobs: Sequence[dict], *, workers: int, costs: Sequence[float], folder: Path,
                  on_done: Callable[[int, Any, float], None] | None = None) -> list:
    """parallel_map(fn, jobs) that reuses the results kept in `folder` and keeps each new one
    there as it finishes (results must be JSON data)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    keys = [job_key(job) for job in jobs]
    results: list = [None] * len(jobs)
    todo = []
    for i, key in enumerate(keys):
        path = folder / f"{key}.json"
        if path.exists():
            results[i] = json.loads(path.read_text())
        else:
            todo.append(i)

    def done(j, result, seconds):
        atomic_write(folder / f"{keys[todo[j]]}.json", json.dumps(result, default=_number).encode())
        if on_done:
            on_done(todo[j], result, seconds)

    fresh = parallel_map(fn, [jobs[i] for i in todo], workers=workers, costs=[costs[i] for i in todo], on_done=done)
    for i, result in zip(todo, fresh):
        results[i] = result
    return results


def finished(folder: Path) -> None:
    """The study wrote its outputs: drop the kept job results."""
    shutil.rmtree(folder, ignore_errors=True)
