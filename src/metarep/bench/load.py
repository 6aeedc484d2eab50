"""Other work competing for the cores: `metarep bench --load N` times the contenders with N
CPU-bound processes running beside them, as on a laptop with a busy browser, a shared server, or
a sweep's other workers."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator

#: one CPU-bound process: a Python loop that never sleeps, allocates or imports anything
SPIN = "while True: pass"


@contextlib.contextmanager
def cpu_load(processes: int) -> Iterator[list[subprocess.Popen]]:
    """Within: `processes` CPU-bound processes run beside this one (ended on leaving, whatever
    happens inside)."""
    procs: list[subprocess.Popen] = []
    try:
        for _ in range(max(0, int(processes))):
            procs.append(subprocess.Popen([sys.executable, "-c", SPIN], stdin=subprocess.DEVNULL,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        yield procs
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()
