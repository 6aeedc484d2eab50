"""Sweeps: the cartesian product of grid values and seeds, each run in its own directory.

A sweep directory DIR holds

    sweep.toml        the sweep's spec: the config (file content with --set applied), the grid, the seeds
    runs/<run_id>/    one run directory per grid point and seed (config.toml, metrics.csv, summary.json, ...)
    results.sqlite    the results table, one row per run (metarep.results)
    results.csv       the same table as CSV, written at the end

Seeds: a seed s sets train.seed = s (initialisation, training tasks, the online task stream)
and test.seed = 1000 + s (the test tasks); problem.seed (B*, mu*, Sigma*) stays as the config
gives it unless the grid names it. Every run is a pure function of its config, so the numbers
do not depend on the backend, the number of workers or the order in which runs finish.

Only this (parent) process writes the results table, as each run comes back; the workers only
write their own run directories. Re-running an interrupted sweep with the same arguments skips
the runs that are done (summary.json present) and redoes the others, continuing each from its
checkpoint when it has one.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import multiprocessing
import os
import re
import signal
import sys
import time
import tomllib
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from metarep import store
from metarep.config import SECTIONS, Config, ConfigError, apply_overrides, parse_value, read_toml, validate
from metarep.results import Results, failed_row, row_from_summary

SPEC_FILE = "sweep.toml"
RESULTS_DB = "results.sqlite"
RESULTS_CSV = "results.csv"
RUNS_DIR = "runs"
SEED_KEYS = ("train.seed", "test.seed")
TEST_SEED_OFFSET = 1000
SEED_RULE = f"train.seed = s, test.seed = {TEST_SEED_OFFSET} + s"
BACKENDS = ("local", "ray")
# One thread per run (BLAS and numba): W runs on W cores, and the same arithmetic on every backend.
WORKER_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
_KEY = re.compile(r"^([a-z_][a-z0-9_]*)\.([a-z_][a-z0-9_]*)$")
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]")
MAX_NAME = 120


class SweepError(ConfigError):
    """A sweep that cannot start as asked (one line; the CLI exits with status 2)."""


# ----------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class Axis:
    """One --grid option: a config key and the values it takes, in the order given."""

    key: str
    values: tuple

    @property
    def section(self) -> str:
        return self.key.partition(".")[0]

    @property
    def name(self) -> str:
        return self.key.partition(".")[2]


def parse_seeds(text: str) -> list[int]:
    """Seeds from "0-4" (inclusive range), "1,3", or a mix such as "0-2,7"."""
    seeds: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        match = re.fullmatch(r"(\d+)\s*-\s*(\d+)", part) or re.fullmatch(r"(\d+)", part)
        if not match:
            raise SweepError(f"--seeds expects non-negative integers and ranges such as 0-4 or 1,3; got {text!r}")
        lo = int(match.group(1))
        hi = int(match.group(2)) if match.lastindex == 2 else lo
        if hi < lo:
            raise SweepError(f"--seeds range {part!r} is empty (write it low-high)")
        seeds.extend(range(lo, hi + 1))
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise SweepError(f"--seeds {text!r} repeats seed {repeated[0]}")
    return seeds


def split_values(text: str) -> list[str]:
    """Split a --grid value list at the commas outside brackets, braces and quotes."""
    parts, depth, quote, current = [], 0, "", []
    for ch in text:
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    parts.append("".join(current))
    return [p.strip() for p in parts]


def _normalize(value: Any) -> Any:
    """TOML reads a bare `inf` as a float; the config spells infinity as the string "inf"."""
    if isinstance(value, float) and math.isinf(value) and value > 0:
        return "inf"
    return value


def parse_axis(text: str) -> Axis:
    """`section.key=v1,v2,...` with each value read as a TOML value (config.parse_value)."""
    key, sep, values = text.partition("=")
    key = key.strip()
    match = _KEY.match(key)
    if not sep or not match:
        raise SweepError(f"--grid expects section.key=value1,value2,...; got {text!r}")
    if match.group(1) not in SECTIONS:
        raise SweepError(f"--grid {key}: {match.group(1)!r} is not a config section ({', '.join(SECTIONS)})")
    items = split_values(values)
    if any(not item for item in items):
        raise SweepError(f"--grid {key}: empty value in {values!r}")
    parsed = [_normalize(parse_value(item)) for item in items]
    for i, value in enumerate(parsed):
        if any(_same(value, other) for other in parsed[:i]):
            raise SweepError(f"--grid {key}: value {items[i]} is given twice")
    return Axis(key, tuple(parsed))


def _same(a, b) -> bool:
    return type(a) is type(b) and a == b or (isinstance(a, (int, float)) and isinstance(b, (int, float))
                                              and not isinstance(a, bool) and a == b)


def parse_grid(items: Iterable[str | Axis]) -> list[Axis]:
    """All --grid options; a key may appear once."""
    axes = [item if isinstance(item, Axis) else parse_axis(item) for item in items]
    keys = [axis.key for axis in axes]
    for key in keys:
        if keys.count(key) > 1:
            raise SweepError(f"--grid {key} is given twice: list all its values in one --grid")
    return axes


# ----------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class PlannedRun:
    """One run of the sweep: its place in the grid, its values, its seed and its validated config."""

    index: int
    run_id: str
    point: dict[str, Any]
    seed: int
    config: Config

    @property
    def label(self) -> str:
        parts = [f"{k}={_text(v)}" for k, v in self.point.items()]
        return ", ".join(parts + [f"seed={self.seed}"])


@dataclass
class Sweep:
    """A validated sweep: the base config data, the grid, the seeds and every run it expands to."""

    config_path: str
    sets: list[str]
    base: dict[str, Any]
    grid: list[Axis]
    seeds: list[int] | None
    runs: list[PlannedRun] = field(default_factory=list)

    @property
    def grid_keys(self) -> list[str]:
        return [axis.key for axis in self.grid]

    def spec(self) -> dict[str, Any]:
        """The content of sweep.toml."""
        info: dict[str, Any] = {"config": self.config_path, "set": list(self.sets), "runs": len(self.runs)}
        if self.seeds is not None:
            info.update(seeds=list(self.seeds), seed_rule=SEED_RULE)
        return {"sweep": info, "grid": {axis.key: list(axis.values) for axis in self.grid}, "config": self.base}

    def command(self, out: str | Path = "DIR") -> str:
        """The command line that runs (or continues) this sweep."""
        return command_line(self.spec(), out)


def format_value(value: Any) -> str:
    """A value as written on the command line: bare where parse_value reads it back as it is."""
    if isinstance(value, str) and _normalize(parse_value(value)) == value and "," not in value \
            and value.strip() == value and value:
        return value
    return inline_toml(value)


def inline_toml(value: Any) -> str:
    """A TOML value on one line (arrays and tables inline)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(inline_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {inline_toml(v)}" for k, v in value.items()) + "}"
    return tomli_w.dumps({"v": value}).partition("=")[2].strip()


def command_line(spec: dict[str, Any], out: str | Path = "DIR") -> str:
    """The `metarep sweep` command of a sweep spec (the content of sweep.toml)."""
    info = spec.get("sweep", {})
    words = ["metarep sweep", _shell(str(info.get("config", "CONFIG")))]
    for key, values in spec.get("grid", {}).items():
        words.append("--grid " + _shell(f"{key}={','.join(format_value(v) for v in values)}"))
    if info.get("seeds") is not None:
        words.append(f"--seeds {format_seeds(info['seeds'])}")
    words += [f"--set {_shell(item)}" for item in info.get("set", [])]
    return " ".join(words + [f"--out {_shell(str(out))}"])


def _text(value: Any) -> str:
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, separators=(",", ":"))
    return repr(value) if isinstance(value, float) else str(value)


def _shell(text: str) -> str:
    return text if re.fullmatch(r"[A-Za-z0-9_./=,:+-]+", text) else "'" + text.replace("'", "'\\''") + "'"


def format_seeds(seeds: Sequence[int]) -> str:
    """[0, 1, 2, 5] -> "0-2,5"."""
    parts, run = [], []
    for s in list(seeds) + [None]:
        if run and (s is None or s != run[-1] + 1):
            parts.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
            run = []
        if s is not None:
            run.append(s)
    return ",".join(parts)


def config_hash(config: Config, length: int = 10) -> str:
    """A stable short hash of the resolved config (every key, defaults included)."""
    text = json.dumps(config.to_dict(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def _labels(grid: list[Axis], with_seed: bool) -> dict[str, str]:
    """Short names (m_in) where they are unambiguous, full keys (train.alpha) where not."""
    names = [axis.name for axis in grid] + (["seed"] if with_seed else [])
    return {axis.key: axis.name if names.count(axis.name) == 1 else axis.key for axis in grid}


def run_id_for(point: dict[str, Any], seed: int | None, config: Config, labels: dict[str, str]) -> str:
    """`<key=value,...>-<hash>`: readable, and unique because the hash covers the whole config."""
    parts = [f"{labels[k]}={_NAME_UNSAFE.sub('_', _text(v))}" for k, v in point.items()]
    if seed is not None:
        parts.append(f"seed={seed}")
    name = ",".join(parts)[:MAX_NAME]
    return f"{name}-{config_hash(config)}" if name else config_hash(config)


def _set(data: dict[str, Any], key: str, value: Any) -> None:
    section, _, name = key.partition(".")
    table = data.setdefault(section, {})
    if not isinstance(table, dict):
        raise SweepError(f"{section}: must be a table")
    table[name] = value


def expand(base: dict[str, Any], grid: list[Axis], seeds: list[int] | None):
    """Yield (point, seed or None, config data) over the cartesian product: the first grid key
    varies slowest, the seeds fastest."""
    for values in itertools.product(*(axis.values for axis in grid)):
        point = dict(zip((axis.key for axis in grid), values))
        for seed in (seeds if seeds is not None else [None]):
            data = {name: dict(section) if isinstance(section, dict) else section for name, section in base.items()}
            for key, value in point.items():
                _set(data, key, value)
            if seed is not None:
                _set(data, "train.seed", seed)
                _set(data, "test.seed", seed + TEST_SEED_OFFSET)
            yield point, seed, data


def plan(config_path: str | Path, grid: Iterable[str | Axis] = (), seeds: str | Sequence[int] | None = None,
         sets: Sequence[str] = ()) -> Sweep:
    """Parse and validate a whole sweep before anything runs; SweepError/ConfigError otherwise."""
    from metarep.resources import check_memory

    axes = parse_grid(grid)
    seed_list = parse_seeds(seeds) if isinstance(seeds, str) else (None if seeds is None else list(seeds))
    if seed_list is not None:
        if not seed_list:
            raise SweepError("--seeds names no seed")
        if any(not isinstance(s, int) or s < 0 for s in seed_list):
            raise SweepError(f"seeds must be non-negative integers, got {seed_list}")
    sets = list(sets)
    set_keys = [item.partition("=")[0].strip() for item in sets]
    if seed_list is not None:
        clash = [k for k in SEED_KEYS if k in set_keys or k in (a.key for a in axes)]
        if clash:
            raise SweepError(f"--seeds sets {' and '.join(SEED_KEYS)} ({SEED_RULE}); "
                             f"do not give {clash[0]} in --grid or --set as well")
    both = [axis.key for axis in axes if axis.key in set_keys]
    if both:
        raise SweepError(f"{both[0]} is given in both --grid and --set: keep one")
    base = apply_overrides(read_toml(config_path), sets)
    for key in set_keys:
        section, _, name = key.partition(".")
        if isinstance(base.get(section), dict) and name in base[section]:
            base[section][name] = _normalize(base[section][name])
    sweep = Sweep(str(config_path), sets, base, axes, seed_list)
    labels = _labels(axes, seed_list is not None)
    seen: dict[str, PlannedRun] = {}
    for index, (point, seed, data) in enumerate(expand(base, axes, seed_list)):
        where = ", ".join([f"{k}={_text(v)}" for k, v in point.items()] +
                          ([f"seed={seed}"] if seed is not None else []))
        try:
            config = validate(data)
            check_memory(config)
        except ConfigError as err:
            raise SweepError(f"grid point {where}: {err}" if where else str(err)) from None
        run = PlannedRun(index, run_id_for(point, seed, config, labels), point, config.train.seed, config)
        digest = config_hash(config)
        if digest in seen:
            raise SweepError(f"grid points {seen[digest].label} and {run.label} give the same config")
        seen[digest] = run
        sweep.runs.append(run)
    return sweep


# ----------------------------------------------------------------------------- the sweep directory


def _toml_roundtrip(data: dict) -> dict:
    return tomllib.loads(tomli_w.dumps(data))


def _comparable_spec(spec: dict) -> dict[str, Any]:
    spec = _toml_roundtrip(spec)
    return {"the config (file and --set)": spec.get("config", {}),
            "the grid": list(spec.get("grid", {}).items()),
            "the seeds": spec.get("sweep", {}).get("seeds")}


def read_spec(out: str | Path) -> dict[str, Any] | None:
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


def _config_matches(run_dir: Path, config: Config) -> bool:
    try:
        return validate(read_toml(run_dir / "config.toml")).to_dict() == config.to_dict()
    except ConfigError:
        return False


def _prepare_run_dir(run_dir: Path, config: Config) -> dict | None:
    """The run's summary when it is done; otherwise make the directory ready to (re)run and return None."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if _config_matches(run_dir, config):
        try:
            summary = store.read_summary(run_dir)
        except (OSError, ValueError):
            summary = None
        if summary is not None and summary.get("status") in ("completed", "diverged"):
            return summary
    else:
        for stale in ("summary.json", store.CHECKPOINT):
            (run_dir / stale).unlink(missing_ok=True)
        store.write_config(run_dir / "config.toml", config.to_dict())
    (run_dir / "summary.json").unlink(missing_ok=True)
    for leftover in run_dir.glob(".*.tmp"):  # an atomic write cut short by a kill
        leftover.unlink(missing_ok=True)
    return None


# ----------------------------------------------------------------------------- one run (in a worker)

_STOP = None


def _init_worker(stop_event) -> None:
    """Worker processes leave Ctrl-C to the parent, which asks them to stop through the event."""
    global _STOP
    _STOP = stop_event
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _should_stop() -> bool:
    return _STOP is not None and _STOP.is_set()


def one_line(err: BaseException, limit: int = 400) -> str:
    text = " ".join(f"{type(err).__name__}: {err}".split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def run_one(run_dir: str, figure: bool = True) -> dict[str, Any]:
    """Run (or continue, from its checkpoint) the experiment in `run_dir`, whose config.toml is written.

    Returns {"status", "summary", "message", "wall_s"}; an exception becomes status "failed".
    """
    start = time.perf_counter()
    try:
        from metarep.execute import execute_run

        result = execute_run(None, [], None, resume=Path(run_dir), figure=figure, should_stop=_should_stop)
        out = {"status": result.status, "summary": result.summary, "message": result.message}
    except Exception as err:  # noqa: BLE001 - any error of one run is recorded, the sweep goes on
        out = {"status": "failed", "summary": None, "message": one_line(err)}
    out["wall_s"] = time.perf_counter() - start
    return out


# ----------------------------------------------------------------------------- backends

Task = tuple[PlannedRun, Path]
OnResult = Callable[[PlannedRun, dict], None]


@contextmanager
def _worker_env():
    """Set WORKER_ENV (where the user has not) for the worker processes started inside the block."""
    added = {k: v for k, v in WORKER_ENV.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def run_local(tasks: list[Task], workers: int, figures: bool, should_stop: Callable[[], bool],
              on_result: OnResult) -> bool:
    """Run on a process pool of `workers` fresh ("spawn") processes; True when stopped early."""
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    stopped = False
    with _worker_env(), ProcessPoolExecutor(max_workers=max(1, min(workers, len(tasks))), mp_context=ctx,
                                          initializer=_init_worker, initargs=(stop,)) as pool:
        futures = {pool.submit(run_one, str(run_dir), figures): run for run, run_dir in tasks}
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                for future in sorted(done, key=lambda f: futures[f].index):
                    if future.cancelled():
                        continue
                    try:
                        result = future.result()
                    except Exception as err:  # noqa: BLE001 - e.g. a worker killed by the OS
                        result = {"status": "failed", "summary": None, "message": one_line(err), "wall_s": None}
                    on_result(futures[future], result)
                if not stopped and should_stop():
                    stopped = True
                    stop.set()
                    for future in pending:
                        future.cancel()
        except BaseException:
            stop.set()
            for future in pending:
                future.cancel()
            raise
    return stopped


def import_ray():
    """The ray module, or a one-line SweepError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise SweepError("--backend ray needs Ray: install metarep[ray] (pip install 'metarep[ray]')") from None
    return ray


def run_ray(tasks: list[Task], workers: int, figures: bool, should_stop: Callable[[], bool],
            on_result: OnResult) -> bool:
    """Run as Ray tasks: on the cluster at $RAY_ADDRESS, else on a local Ray started for the sweep
    with `workers` CPUs (shut down at the end). True when stopped early."""
    ray = import_ray()
    started = False
    if not ray.is_initialized():
        options = {"runtime_env": {"env_vars": dict(WORKER_ENV)}, "configure_logging": False}
        address = os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address, **options)
        else:
            ray.init(num_cpus=workers, include_dashboard=False, **options)
        started = True
    stopped = False
    try:
        remote = ray.remote(num_cpus=1, max_retries=0)(run_one)
        refs = {remote.remote(str(run_dir), figures): run for run, run_dir in tasks}
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=0.2)
            for ref in ready:
                try:
                    result = ray.get(ref)
                except Exception as err:  # noqa: BLE001 - a task or worker that died
                    result = {"status": "failed", "summary": None, "message": one_line(err), "wall_s": None}
                on_result(refs[ref], result)
            if pending and should_stop():
                stopped = True
                for ref in pending:
                    ray.cancel(ref, force=True)
                break
    finally:
        if started:
            ray.shutdown()
    return stopped


BACKEND_RUNNERS = {"local": run_local, "ray": run_ray}


# ----------------------------------------------------------------------------- the sweep


@dataclass
class SweepOutcome:
    out: Path
    columns: list[str]
    rows: list[dict[str, Any]]
    total: int
    skipped: int
    ran: int
    stopped: bool

    def count(self, status: str) -> int:
        return sum(row["status"] == status for row in self.rows)

    @property
    def missing(self) -> int:
        return self.total - len(self.rows)


LOCK_FILE = ".sweep.lock"


@contextmanager
def _exclusive(out: Path):
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


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def run_sweep(sweep: Sweep, out: str | Path, *, backend: str = "local", workers: int | None = None,
              figures: bool = True, progress: bool = True, should_stop: Callable[[], bool] = lambda: False,
              echo: Callable[[str], None] | None = None) -> SweepOutcome:
    """Run every run of `sweep` that is not done yet into `out`, recording each result as it comes back."""
    if backend not in BACKENDS:
        raise SweepError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    workers = workers or default_workers()
    if workers < 1:
        raise SweepError(f"--workers must be at least 1, got {workers}")
    out = Path(out).absolute()
    check_out(out, sweep)  # before anything is written
    if backend == "ray":
        import_ray()
    out.mkdir(parents=True, exist_ok=True)
    with _exclusive(out):
        if not check_out(out, sweep):  # again, now that no other sweep can write here
            store.atomic_write(out / SPEC_FILE, tomli_w.dumps(sweep.spec()).encode())
        (out / RUNS_DIR).mkdir(exist_ok=True)
        with Results(out / RESULTS_DB, sweep.grid_keys) as table:
            return _run(sweep, out, table, backend, workers, figures, progress, should_stop, echo)


def _run(sweep: Sweep, out: Path, table: Results, backend: str, workers: int, figures: bool, progress: bool,
         should_stop: Callable[[], bool], echo: Callable[[str], None] | None) -> SweepOutcome:
    from tqdm import tqdm

    tasks: list[Task] = []
    for run in sweep.runs:
        run_dir = out / RUNS_DIR / run.run_id
        summary = _prepare_run_dir(run_dir, run.config)
        if summary is None:
            tasks.append((run, run_dir))
            continue
        row = table.get(run.run_id)
        if row is None or row["status"] != summary["status"]:
            table.record(row_from_summary(run.run_id, run.index, run.point, run.seed, summary))
    skipped = len(sweep.runs) - len(tasks)
    bar = tqdm(total=len(sweep.runs), initial=skipped, unit="run", desc="sweep", disable=not progress or None,
               dynamic_ncols=True)
    say = echo or (lambda text: bar.write(text, file=sys.stderr))

    def on_result(run: PlannedRun, result: dict) -> None:
        status = result["status"]
        if status in ("completed", "diverged"):
            table.record(row_from_summary(run.run_id, run.index, run.point, run.seed, result["summary"],
                                          result["wall_s"]))
        elif status == "failed":
            table.record(failed_row(run.run_id, run.index, run.point, run.seed, result["message"],
                                    result["wall_s"]))
            say(f"failed: {run.label}: {result['message']}")
        else:
            return  # interrupted: it left a checkpoint and is redone on the next call
        bar.update(1)

    stopped = False
    try:
        if tasks:
            stopped = BACKEND_RUNNERS[backend](tasks, workers, figures, should_stop, on_result)
    finally:
        bar.close()
        table.export_csv(out / RESULTS_CSV)
    return SweepOutcome(out, table.columns, table.rows(), len(sweep.runs), skipped, len(tasks), stopped)


# ----------------------------------------------------------------------------- display


def display_rows(columns: list[str], rows: list[dict[str, Any]], *,
                 drop: Sequence[str] = ("run_id", "wall_s", "message")):
    """(headers, table) for printing: metrics to 4 significant digits, missing values blank."""
    shown = [c for c in columns if c not in drop]

    def cell(value):
        if value is None:
            return ""
        if isinstance(value, float):
            return f"{value:.4g}"
        return value

    return shown, [[cell(row.get(c)) for c in shown] for row in rows]
