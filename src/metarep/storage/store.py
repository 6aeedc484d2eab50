"""Run directories: atomic writes, checkpoints, and the files a run leaves behind.

A run directory holds config.toml, metrics.csv, params.npz, summary.json, metrics.png and,
while it runs, checkpoint.npz. Every file is written to a temporary name, fsynced and renamed,
so a crash at any instant leaves the old file or the new one, never a torn one.

The checkpoint is an npz of plain arrays (no pickles): B, w, the metric history as a float64
table, and a JSON record (as bytes) with the step, the RNG state of the online task stream,
the history's column names, a format number and the SHA-256 of the resolved config, and the
outer optimizer's state (arrays named opt.<key>, none for plain gradient descent). A
checkpoint is only loaded into a run whose resolved config has the same hash.

Files are written by `metarep.storage.atomic.atomic_write` (its names are re-exported here).
"""

from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import io
import json
import math
import os
import zipfile
from pathlib import Path

import numpy as np
import tomli_w

from metarep.config.schema import ConfigError
from metarep.storage.atomic import (  # noqa: F401 - re-exported: the run directory's writes
    TMP_SUFFIX,
    WRITE_DELAY_ENV,
    atomic_write,
    fsync_dir,
    only_temporaries,
    remove_temporaries,
)
from metarep.storage.tables import csv_text

CHECKPOINT = "checkpoint.npz"
CHECKPOINT_FORMAT = 1
OPT_PREFIX = "opt."   # the outer optimizer's state arrays (`metarep.optimizers`), by key
RESULT_FILES = ("metrics.csv", "params.npz", "metrics.png")


class CheckpointError(ConfigError):
    """A checkpoint that cannot be used: unreadable, or written for another config."""


class RunDirBusy(ConfigError):
    """Another process is running in this run directory."""


@contextlib.contextmanager
def lock_run_dir(run_dir: Path):
    """Hold an exclusive lock on the run directory itself (no lock file) while a run uses it.

    The lock is released when the process exits, however it exits.
    """
    import fcntl

    fd = os.open(run_dir, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunDirBusy(f"run directory {str(run_dir)!r} is in use by another metarep process; "
                                 f"wait for it to finish or stop it first") from None
            # a filesystem without locks: run unlocked
        yield
    finally:
        os.close(fd)


def npz_bytes(**arrays) -> bytes:
    """An .npz archive of plain arrays, byte-for-byte reproducible (fixed zip timestamps, no pickles)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, value in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(value), allow_pickle=False)
    return buf.getvalue()


def write_config(path: Path, config_dict: dict) -> None:
    atomic_write(path, tomli_w.dumps(config_dict).encode())


def config_hash(config) -> str:
    """SHA-256 of the resolved config (every key, defaults included), as hex."""
    text = json.dumps(config.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def history_columns(history: list[dict]) -> list[str]:
    return list(history[0]) if history else ["step"]


def csv_bytes(history: list[dict]) -> bytes:
    """The metric history as CSV, numbers written with repr precision (round-trips exactly)."""
    return csv_text(history, history_columns(history)).encode()


def read_metrics(path: Path) -> list[dict]:
    """metrics.csv back into rows of numbers."""
    with open(path, newline="") as f:
        return [{k: (int(v) if k == "step" else float(v)) for k, v in row.items()} for row in csv.DictReader(f)]


def save_checkpoint(run_dir: Path, state, *, config_hash: str | None = None) -> None:
    """Parameters (each field of the params NamedTuple by name), step, metric history and RNG state
    in one atomically written npz (no pickles).

    `config_hash` (see `config_hash`) is recorded so that a resume can refuse another config.
    """
    columns = history_columns(state.history)
    table = np.array([[row[c] for c in columns] for row in state.history], dtype=np.float64).reshape(-1, len(columns))
    fields = list(state.params._fields)
    opt = dict(state.opt_state or {})
    meta = {"format": CHECKPOINT_FORMAT, "step": state.step, "status": state.status, "rng_state": state.rng_state,
            "columns": columns, "config_hash": config_hash, "params": fields, "opt_state": list(opt)}
    arrays = {name: np.asarray(value) for name, value in zip(fields, state.params, strict=True)}
    arrays.update({f"{OPT_PREFIX}{key}": np.asarray(value) for key, value in opt.items()})
    atomic_write(Path(run_dir) / CHECKPOINT, npz_bytes(**arrays, history=table,
                                                       meta=np.frombuffer(json.dumps(meta).encode(), np.uint8)))


def _read_checkpoint(path: Path):
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(data["meta"].tobytes().decode())
        if not isinstance(meta, dict) or meta.get("format", CHECKPOINT_FORMAT) != CHECKPOINT_FORMAT:
            raise ValueError("unknown checkpoint format")
        fields = meta.get("params", ["B", "w"])
        if not (isinstance(fields, list) and fields and all(isinstance(f, str) and f in data for f in fields)):
            raise ValueError("malformed parameter list")
        arrays = {name: data[name].copy() for name in fields}
        keys = meta.get("opt_state", [])
        if not (isinstance(keys, list) and all(isinstance(k, str) and OPT_PREFIX + k in data for k in keys)):
            raise ValueError("malformed optimizer state")
        opt = {k: data[OPT_PREFIX + k].copy() for k in keys}
        table = data["history"].copy()
    _check_record(meta, arrays, table)
    return meta, arrays, table, opt


def _check_record(meta: dict, arrays: dict, table: np.ndarray) -> None:
    columns, step = meta["columns"], meta["step"]
    if not (isinstance(step, int) and step >= 0 and isinstance(columns, list) and columns
            and all(isinstance(c, str) for c in columns)):
        raise ValueError("malformed record")
    if table.dtype != np.float64 or table.ndim != 2 or table.shape[1] != len(columns):
        raise ValueError("malformed metric history")
    if any(a.dtype.kind != "f" for a in arrays.values()):
        raise ValueError("malformed parameters")
    if meta.get("rng_state") is not None:
        np.random.default_rng().bit_generator.state = meta["rng_state"]   # raises if malformed


def load_checkpoint(run_dir: Path, *, like, config_hash: str | None = None):
    """The TrainState saved by save_checkpoint, or None when the directory has no checkpoint.

    `like` is the run's fresh state: the checkpoint must hold parameters of its NamedTuple type,
    with the same fields and shapes. With `config_hash`, a checkpoint recorded for a different
    resolved config is refused (CheckpointError); so is an unreadable one, with a message saying
    what to do.
    """
    path = Path(run_dir) / CHECKPOINT
    if not path.exists():
        return None
    try:
        meta, arrays, table, opt = _read_checkpoint(path)
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as err:
        raise CheckpointError(f"checkpoint {str(path)!r} is unreadable ({type(err).__name__}: {err}); "
                              f"delete it to restart the run from step 0") from None
    recorded = meta.get("config_hash")
    if config_hash is not None and recorded is not None and recorded != config_hash:
        raise CheckpointError(f"{str(Path(run_dir) / 'config.toml')!r} no longer matches the config the checkpoint "
                              f"was written with (config hash {recorded[:12]} != {config_hash[:12]}; edited, or "
                              f"written by another metarep version): restore the original config.toml, or "
                              f"start a new run with --out")
    fresh = like.params
    expected = {f: (np.shape(v), np.asarray(v).dtype) for f, v in zip(fresh._fields, fresh, strict=True)}
    if {f: (a.shape, a.dtype) for f, a in arrays.items()} != expected or list(arrays) != list(expected):
        raise CheckpointError(f"checkpoint in {str(Path(run_dir))!r} does not fit its config.toml (parameters "
                              f"{ {f: a.shape for f, a in arrays.items()} }, step {meta['step']}); delete "
                              f"{CHECKPOINT} to restart from step 0")
    fresh_opt = like.opt_state or {}
    if {k: (a.shape, a.dtype) for k, a in opt.items()} != {k: (np.shape(v), np.asarray(v).dtype)
                                                           for k, v in fresh_opt.items()}:
        raise CheckpointError(f"checkpoint in {str(Path(run_dir))!r} holds another optimizer's state than its "
                              f"config.toml's train.optimizer; delete {CHECKPOINT} to restart from step 0")
    history = [{c: (int(v) if c == "step" else float(v)) for c, v in zip(meta["columns"], row, strict=True)}
               for row in table]
    return type(like)(type(fresh)(**arrays), step=meta["step"], history=history, rng_state=meta["rng_state"],
                      opt_state=opt if like.opt_state is not None else None)


def clear_run_dir(run_dir: Path) -> None:
    """Remove what an earlier run left, config.toml first so that the directory stops being
    resumable before anything else goes."""
    run_dir = Path(run_dir)
    for name in ("config.toml", "summary.json", CHECKPOINT, *RESULT_FILES):
        (run_dir / name).unlink(missing_ok=True)
    remove_temporaries(run_dir)


def write_results(run_dir: Path, exp, state, summary: dict, *, figure: bool = True) -> None:
    """The results of a finished run of `exp` (see `write_outputs`)."""
    write_outputs(run_dir, state.history, exp.arrays(state.params), summary, exp.config, figure=figure)


def write_outputs(run_dir: Path, history: list[dict], arrays: dict, summary: dict, config, *,
                  figure: bool = True) -> None:
    """metrics.csv, params.npz, summary.json (written last: its presence means the run is done), metrics.png.

    The checkpoint is removed only after summary.json is in place; a directory with both is done.
    """
    run_dir = Path(run_dir)
    atomic_write(run_dir / "metrics.csv", csv_bytes(history))
    atomic_write(run_dir / "params.npz", npz_bytes(**arrays))
    if figure:
        from metarep.plots import metrics_figure, save_figure

        save_figure(metrics_figure(history, summary, config), run_dir / "metrics.png")
    atomic_write(run_dir / "summary.json", summary_bytes(summary))
    (run_dir / CHECKPOINT).unlink(missing_ok=True)
    fsync_dir(run_dir)


def json_safe(value):
    """`value` with every non-finite float (NaN, +-inf) replaced by None: strict JSON has no
    NaN, and summary.json is read by tools other than Python (null means "no value")."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def summary_bytes(summary: dict) -> bytes:
    """summary.json's content: strict JSON (non-finite numbers as null), indented."""
    return (json.dumps(json_safe(summary), indent=2, allow_nan=False) + "\n").encode()


def read_summary(run_dir: Path) -> dict | None:
    """summary.json of a finished run, None when there is none; an unreadable one is a ConfigError.
    A number with no value reads back as None: written as null, or as NaN by earlier versions."""
    path = Path(run_dir) / "summary.json"
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"{str(path)!r} is unreadable ({err}); delete it to run the rest again") from None
    if not isinstance(data, dict) or "status" not in data:
        raise ConfigError(f"{str(path)!r} is not a metarep summary; delete it to run the rest again")
    return json_safe(data)  # a file written before null replaced NaN reads the same
