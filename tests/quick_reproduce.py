"""The `--quick` outputs of `metarep reproduce`, each made once per test session (through the
command line) and shared by the test modules that read them."""

from __future__ import annotations

import atexit
import csv
import functools
import json
import shutil
import tempfile
from pathlib import Path

from metarep.cli import main

_ROOT = Path(tempfile.mkdtemp(prefix="metarep-quick-"))
atexit.register(shutil.rmtree, _ROOT, True)
#: two workers where the runs outweigh starting them (each imports torch); the other studies run
#: in-process: they are small
WORKERS = {"table1": 2, "figure1": 2, "nonlinear": 2, "realdata": 2, "sinusoid": 2}


@functools.cache
def quick(name: str) -> Path:
    """The folder `metarep reproduce <name> --quick` wrote."""
    out = _ROOT / name
    code = main(["reproduce", name, "--quick", "--workers", str(WORKERS.get(name, 1)), "--out", str(out)])
    assert code == 0, f"metarep reproduce {name} --quick exited {code}"
    return out


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def summary(name: str) -> dict:
    return json.loads((quick(name) / f"{name}_summary.json").read_text())
