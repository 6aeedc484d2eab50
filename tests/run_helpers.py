"""What the resume tests share: a stop signal after so many steps, and a run's result files."""

from __future__ import annotations

from pathlib import Path

RESULT_FILES = ("metrics.csv", "params.npz", "summary.json")


def stop_after(calls: int):
    """should_stop that says stop on its `calls`-th poll (the loop polls once per step)."""
    seen = [0]

    def should_stop():
        seen[0] += 1
        return seen[0] == calls

    return should_stop


def result_files(run_dir: Path) -> dict[str, bytes]:
    return {name: (run_dir / name).read_bytes() for name in RESULT_FILES}
