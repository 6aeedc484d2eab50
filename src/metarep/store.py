"""Run directories: atomic writes, checkpoints, and the files a run leaves behind.

A run directory holds config.toml, metrics.csv, params.npz, summary.json, metrics.png and,
while it runs, checkpoint.npz. Every file is written to a temporary name, fsynced and renamed,
so a crash at any instant leaves the old file or the new one, never a torn one.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import tomli_w

from metarep.params import Params

CHECKPOINT = "checkpoint.npz"


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a fsynced temporary file and an atomic rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def write_config(path: Path, config_dict: dict) -> None:
    atomic_write(path, tomli_w.dumps(config_dict).encode())


def history_columns(history: list[dict]) -> list[str]:
    return list(history[0]) if history else ["step"]


def csv_bytes(history: list[dict]) -> bytes:
    """The metric history as CSV, numbers written with repr precision (round-trips exactly)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    columns = history_columns(history)
    writer.writerow(columns)
    for row in history:
        writer.writerow([repr(row[c]) if isinstance(row[c], float) else row[c] for c in columns])
    return out.getvalue().encode()


def read_metrics(path: Path) -> list[dict]:
    """metrics.csv back into rows of numbers."""
    with open(path, newline="") as f:
        return [{k: (int(v) if k == "step" else float(v)) for k, v in row.items()} for row in csv.DictReader(f)]


def save_checkpoint(run_dir: Path, state) -> None:
    """Parameters, step, metric history and RNG state in one atomically written npz (no pickles)."""
    columns = history_columns(state.history)
    table = np.array([[row[c] for c in columns] for row in state.history], dtype=np.float64).reshape(-1, len(columns))
    meta = {"step": state.step, "status": state.status, "rng_state": state.rng_state, "columns": columns}
    atomic_write(Path(run_dir) / CHECKPOINT, npz_bytes(B=state.params.B, w=state.params.w, history=table,
                                                       meta=np.frombuffer(json.dumps(meta).encode(), np.uint8)))


def load_checkpoint(run_dir: Path):
    """The TrainState saved by save_checkpoint, or None when the directory has no checkpoint."""
    from metarep.runner import TrainState

    path = Path(run_dir) / CHECKPOINT
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(data["meta"].tobytes().decode())
        history = [{c: (int(v) if c == "step" else float(v)) for c, v in zip(meta["columns"], row)}
                   for row in data["history"]]
        params = Params(data["B"].copy(), data["w"].copy())
    return TrainState(params, step=meta["step"], history=history, rng_state=meta["rng_state"])


def write_results(run_dir: Path, exp, state, summary: dict, *, figure: bool = True) -> None:
    """metrics.csv, params.npz, summary.json (written last: its presence means the run is done), metrics.png."""
    run_dir = Path(run_dir)
    atomic_write(run_dir / "metrics.csv", csv_bytes(state.history))
    atomic_write(run_dir / "params.npz", npz_bytes(B=state.params.B, w=state.params.w, B_star=exp.problem.B_star,
                                                   mu_star=exp.problem.mu_star, Sigma_star=exp.problem.Sigma_star))
    if figure:
        from metarep.plots import metrics_figure

        metrics_figure(state.history, summary, run_dir / "metrics.png")
    atomic_write(run_dir / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())
    (run_dir / CHECKPOINT).unlink(missing_ok=True)


def read_summary(run_dir: Path) -> dict | None:
    path = Path(run_dir) / "summary.json"
    return json.loads(path.read_text()) if path.exists() else None
