"""What `metarep bench` measures (`BenchConfig`) and what it found (`Row`, `BenchResult`)."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import TypeVar

from metarep.bench import contenders as _contenders
from metarep.bench.contenders._common import METHODS
from metarep.bench.targets import TARGET_POPULATION_STEPS, Target

__all__ = ["DTYPES", "METHODS", "PAPER", "TOLERANCE", "BenchConfig", "BenchResult", "Row", "resolved"]

DTYPES = ("float64", "float32")

T = TypeVar("T")

#: the paper's setting (section 5): N, m_in, m_out, d, k'
PAPER = {"n_tasks": 5000, "m_in": 20, "m_out": 10, "d": 50, "width": 50}

#: agreement with metarep's gradient and loss, as max |a - b| / max(1, max |b|), per dtype
TOLERANCE = {"float64": 1e-10, "float32": 1e-4}



@dataclass
class BenchConfig:
    """What to measure. None in the repetition fields means: the default for full or quick mode."""

    methods: tuple[str, ...] = METHODS
    n_tasks: int = PAPER["n_tasks"]
    m_in: int = PAPER["m_in"]
    m_out: int = PAPER["m_out"]
    d: int = PAPER["d"]
    width: int = PAPER["width"]
    dtypes: tuple[str, ...] = DTYPES
    contenders: tuple[str, ...] | None = None      # None: every known contender
    repeats: int | None = None                      # timed calls, vectorised contenders (20; quick 3)
    loop_repeats: int | None = None                 # timed calls, loop contenders (3; quick 1)
    warmup: int | None = None                       # untimed calls after the check (2; quick 1)
    min_time: float | None = None                   # and time vectorised ones for at least this long (0.5 s; quick 0)
    rounds: int | None = None                       # interleaved blocks of the vectorised contenders (4; quick 1)
    settle: float | None = None                     # idle seconds before each timed block (0.3; quick 0)
    quick: bool = False
    alpha: float = 0.1
    seed: int = 0
    retain_freed_memory: bool = False               # glibc keeps freed memory (kernels.retain_freed_memory)
    busy_threshold: float = 0.2                     # cores used by other processes that make a timing suspect
    busy_retries: int | None = None                 # re-timings of a suspect vectorised row (2; quick 0)
    busy_wait: float = 5.0                          # seconds to wait before re-timing
    bandwidth: bool = True
    bandwidth_bytes: float | None = None            # size of the read-bandwidth probe (400 MB; quick 32 MB)
    population: bool = True
    pop_steps: int | None = None                    # sequential population steps (10^5; quick 10^3)
    pop_batch: int | None = None                    # seeds along the leading axis (256; quick 16)
    pop_batch_steps: int | None = None              # steps of the batched run (200; quick 20)
    load: int = 0                                   # CPU-bound processes run beside the contenders

    def busy_limit(self) -> float:
        """Cores other processes may keep busy, beyond the `load` ones, before a timing is suspect."""
        return self.busy_threshold + self.load

    def resolved(self) -> BenchConfig:
        """A copy with every None repetition field set for the mode, after validation."""
        q = self.quick
        defaults = {"repeats": 3 if q else 20, "loop_repeats": 1 if q else 3, "warmup": 1 if q else 2,
                    "bandwidth_bytes": 32e6 if q else 400e6, "pop_steps": 1000 if q else TARGET_POPULATION_STEPS,
                    "pop_batch": 16 if q else 256, "pop_batch_steps": 20 if q else 200,
                    "busy_retries": 0 if q else 2, "min_time": 0.0 if q else 0.5,
                    "rounds": 1 if q else 4, "settle": 0.0 if q else 0.3}
        values = asdict(self)
        for key, value in defaults.items():
            if values[key] is None:
                values[key] = value
        out = BenchConfig(**values)
        out.validate()
        return out

    def validate(self) -> None:
        for name in ("n_tasks", "m_in", "m_out", "d", "width"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for m in self.methods:
            if m not in METHODS:
                raise ValueError(f"method must be one of {METHODS}, got {m!r}")
        for dt in self.dtypes:
            if dt not in DTYPES:
                raise ValueError(f"dtype must be one of {DTYPES}, got {dt!r}")
        if self.contenders is not None:
            unknown = [c for c in self.contenders if c not in _contenders.CONTENDERS]
            if unknown:
                raise ValueError(f"unknown contender(s) {unknown}; known: {list(_contenders.CONTENDERS)}")
        for name in ("repeats", "loop_repeats", "pop_steps", "pop_batch", "pop_batch_steps", "rounds"):
            value = getattr(self, name)
            if value is not None and int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.warmup is not None and self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")
        if not 0 <= int(self.load) <= 64:
            raise ValueError(f"load must be between 0 and 64 processes, got {self.load}")
        if self.settle is not None and not 0 <= self.settle <= 60:
            raise ValueError(f"settle must be between 0 and 60 seconds, got {self.settle}")


@dataclass
class Row:
    """One contender on one (method, dtype)."""

    method: str
    dtype: str
    contender: str
    status: str                       # "ok", "skipped" (not installed), "rejected" (disagrees), "failed"
    times: list[float] = field(default_factory=list)
    error: float | None = None        # agreement with metarep's gradient and loss
    note: str = ""
    task_bytes: int = 0
    n_tasks: int = 0
    ratio: float | None = None        # time / metarep's time (filled in after all rows ran)
    faults: float | None = None       # page faults per call while timing
    other_cores: float | None = None  # cores other processes kept busy while timing
    attempts: int = 0                 # timings made (more than one when the machine was busy)

    @property
    def seconds(self) -> float | None:
        return statistics.median(self.times) if self.times else None

    @property
    def ms(self) -> float | None:
        return None if self.seconds is None else 1e3 * self.seconds

    @property
    def tasks_per_s(self) -> float | None:
        return None if self.seconds is None else self.n_tasks / self.seconds

    @property
    def gbps(self) -> float | None:
        return None if self.seconds is None else self.task_bytes / self.seconds / 1e9


@dataclass
class BenchResult:
    config: BenchConfig
    machine: dict
    reference: str                    # the metarep contender the ratios are relative to
    rows: list[Row]
    read_bandwidth: float | None      # bytes/s
    population: dict | None
    targets: list[Target]
    load_before: tuple | None
    load_after: tuple | None
    wall_seconds: float
    read_bandwidth_probes: list[float] = field(default_factory=list)   # bytes/s; the median is read_bandwidth


def resolved(value: T | None) -> T:
    """A repetition field of a resolved config (`BenchConfig.resolved` sets every one)."""
    if value is None:
        raise ValueError("the config was not resolved: call BenchConfig.resolved() first")
    return value
