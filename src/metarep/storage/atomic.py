"""Atomic file writes: a file is either its old version or its new one, never a torn one.

Every write goes to a temporary name beside the target, `.<name>.<random>.tmp`, is fsynced,
and is renamed over the target; then the directory is fsynced. A process killed in the middle
leaves only such a temporary, which `remove_temporaries` deletes.

Test hook: when the environment variable METAREP_TEST_WRITE_DELAY holds a number of seconds,
`atomic_write` sleeps that long between writing the temporary file and renaming it, which
widens the window in which a fault test can kill a process in the middle of a write.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

TMP_SUFFIX = ".tmp"
WRITE_DELAY_ENV = "METAREP_TEST_WRITE_DELAY"


def _test_write_delay() -> float:
    try:
        return max(0.0, float(os.environ.get(WRITE_DELAY_ENV, "") or 0.0))
    except ValueError:
        return 0.0


def fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable; filesystems that cannot fsync a directory are skipped."""
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a fsynced temporary file and an atomic rename.

    The temporary file is `.<name>.<random>.tmp` beside `path`, created with the usual
    permissions (0666 less the umask); it is removed if the write fails.
    """
    path = Path(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{os.urandom(6).hex()}{TMP_SUFFIX}"
        try:
            fd = os.open(tmp, flags, 0o666)
            break
        except FileExistsError:
            continue
    else:  # pragma: no cover - 100 collisions of 48 random bits
        raise FileExistsError(f"cannot create a temporary file beside {path}")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        delay = _test_write_delay()
        if delay:
            time.sleep(delay)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def remove_temporaries(directory: Path) -> int:
    """Delete the temporary files an interrupted `atomic_write` left in `directory`; return how many."""
    removed = 0
    for p in Path(directory).glob(f".*{TMP_SUFFIX}"):
        if p.is_file():
            p.unlink(missing_ok=True)
            removed += 1
    return removed


def only_temporaries(directory: Path) -> bool:
    """True when `directory` holds nothing but temporaries of interrupted writes (or nothing)."""
    return all(p.name.startswith(".") and p.name.endswith(TMP_SUFFIX) and p.is_file()
               for p in Path(directory).iterdir())
