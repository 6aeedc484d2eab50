"""The sweep directory: its spec (sweep.toml), its lock, and each run's directory made ready
to run, to continue from its checkpoint, or recognised as done.

A directory continues a sweep only when its spec holds the same config, grid and seeds; it is
locked while a sweep runs in it (the OS releases the lock if the process dies).
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import tomli_w

from metarep.config.files import read_toml
from metarep.config.schema import Config, ConfigError, validate
from metarep.storage import store
from metarep.sweeps.grid import SweepError
from metarep.sweeps.plan import Sweep

SPEC_FILE = "sweep.toml"
BASE_FILE = "base.toml"  # the base config of a sweep given as data, so that its command line runs
RESULTS_DB = "results.sqlite"
RESULTS_CSV = "results.csv"
RUNS_DIR = "runs"
LOCK_FILE = ".sweep.lock"
DONE = ("completed", "diverged")


def _comparable_spec(spec: dict) -> dict[str, Any]:
    spec = tomllib.loads(tomli_w.dumps(spec))
    return {"the config (file and --set)": spec.get("config", {}),
            "the grid": list(spec.get("grid", {}).items()),
            "the seeds": spec.get("sweep", {}).get("seeds")}


def read_spec(out: str | Path) -> dict[str, Any] | None:
    """The content of DIR/sweep.toml, None when there is none."""
    path = Path(out) / SPEC_FILE
    if not path.exists():
        return None
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise SweepError(f"{str(path)!r} is not a readable sweep spec: {err}") from None


def check_out(out: Path, sweep: Sweep) -> bool:
    """True when `out` holds this sweep already (continue it), False when it is new or empty;
    SweepError when it holds something else. Writes nothing."""
    if not out.exists():
        return False
    if not out.is_dir():
        raise SweepError(f"--out {str(out)!r} is a file, not a directory")
    stored = read_spec(out)
    if stored is None:
        if any(path.name != LOCK_FILE for path in out.iterdir()):
            raise SweepError(f"output directory {str(out)!r} is not empty and holds no {SPEC_FILE}: "
                             f"choose another --out")
        return False
    old, new = _comparable_spec(stored), _comparable_spec(sweep.spec())
    differ = [what for what in new if old[what] != new[what]]
    if differ:
        raise SweepError(f"{str(out)!r} holds a different sweep ({' and '.join(differ)} differ): re-run it with "
                         f"its own arguments to continue it (see {SPEC_FILE}), or choose another --out")
    return True


def write_spec(out: Path, sweep: Sweep) -> None:
    """sweep.toml (and, for a config given as data, base.toml, which its command line names)."""
    config_path = None
    if sweep.config_path is None:
        config_path = str(out / BASE_FILE)
        store.atomic_write(out / BASE_FILE, tomli_w.dumps(sweep.base).encode())
    store.atomic_write(out / SPEC_FILE, tomli_w.dumps(sweep.spec(config_path)).encode())


@contextmanager
def exclusive(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on the sweep directory (released by the OS if the process dies)."""
    try:
        import fcntl
    except ImportError:  # no POSIX locks here: rely on the user running one sweep per directory
        yield
        return
    with open(out / LOCK_FILE, "a") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SweepError(f"another `metarep sweep` is running in {str(out)!r}: wait for it, or stop it "
                             f"and run this command again to continue") from None
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _config_matches(run_dir: Path, config: Config) -> bool:
    try:
        return validate(read_toml(run_dir / "config.toml")).to_dict() == config.to_dict()
    except ConfigError:
        return False


def _done_summary(run_dir: Path) -> dict | None:
    try:
        summary = store.read_summary(run_dir)
    except (OSError, ValueError):
        return None
    return summary if summary is not None and summary.get("status") in DONE else None


def prepare_run_dir(run_dir: Path, config: Config) -> dict | None:
    """The run's summary when it is done; otherwise make the directory ready to (re)run, from
    its checkpoint when it has one for this config, and return None."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if _config_matches(run_dir, config):
        summary = _done_summary(run_dir)
        if summary is not None:
            return summary
    else:
        for stale in ("summary.json", store.CHECKPOINT):
            (run_dir / stale).unlink(missing_ok=True)
        store.write_config(run_dir / "config.toml", config.to_dict())
    (run_dir / "summary.json").unlink(missing_ok=True)
    store.remove_temporaries(run_dir)  # an atomic write cut short by a kill
    return None
