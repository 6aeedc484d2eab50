"""What every study page shares: its header, its figure file, progress lines, summary JSON."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from metarep.reproduce.common import write_text


def header(title: str, name: str, *, quick: bool, wall: float, machine: str) -> list[str]:
    return [f"# {title}{' (quick run)' if quick else ''}", "",
            f"Settings: `experiments/studies/{name}.toml`. Wall time {wall:.1f} s ({machine}).", "",
            f"![{name}]({name}.png)", ""]


def findings_block(notes: list[str]) -> list[str]:
    return ["## Findings (measured)", ""] + [f"- {n}" for n in notes] + [""]


def save_png(fig, out: Path, name: str) -> None:
    from metarep.plots import save_figure

    save_figure(fig, Path(out) / f"{name}.png", formats=("png",))


def echo_done(echo: Callable[[str], None], jobs: list[dict], name: str):
    def done(i, result, seconds):
        echo(f"  {name}: {jobs[i].get('tag', i)} done in {seconds:.1f} s")
    return done


def finite_or_zero(x) -> float:
    return 0.0 if x is None or not np.isfinite(x) else float(x)


def _plain(value):
    """JSON-safe: numpy scalars as Python numbers, non-finite floats as None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.integer, np.bool_)):
        return value.item()
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def publish(out: Path, name: str, *, rows: list[dict], summary: dict, start: float, render: Callable[[float], str],
            echo: Callable[[str], None]) -> dict:
    """A study's last lines: its wall time since `start`, <name>_summary.json (with `wall_s`),
    <name>.md (`render(wall)`), the page echoed; returns what the study's `run` returns."""
    wall = time.perf_counter() - start
    summary = {**summary, "wall_s": wall}
    write_summary(out, name, summary)
    text = render(wall)
    write_text(Path(out) / f"{name}.md", text)
    echo(text)
    return {"rows": rows, "summary": summary, "wall_s": wall}


def write_summary(out: Path, name: str, summary: dict) -> None:
    """<name>_summary.json: the numbers the study's findings quote, under stable keys."""
    write_text(Path(out) / f"{name}_summary.json", json.dumps(_plain(summary), indent=2, sort_keys=True) + "\n")
