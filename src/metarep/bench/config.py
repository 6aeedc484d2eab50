"""What `metarep bench` measures (`BenchConfig`, a pydantic model validated when made: one-line
ConfigError, exit status 2 from the CLI) and what it found (`Row`, `BenchResult`)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from metarep.bench import contenders as _contenders
from metarep.bench.contenders._common import METHODS
from metarep.bench.targets import TARGET_POPULATION_STEPS, Target
from metarep.config.schema import ConfigError

__all__ = ["DTYPES", "METHODS", "PAPER", "TOLERANCE", "BenchConfig", "BenchResult", "Row", "resolved"]

DTYPES = ("float64", "float32")

T = TypeVar("T")

#: the paper's setting (section 5): N, m_in, m_out, d, k'
PAPER = {"n_tasks": 5000, "m_in": 20, "m_out": 10, "d": 50, "width": 50}

#: agreement with metarep's gradient and loss, as max |a - b| / max(1, max |b|), per dtype
TOLERANCE = {"float64": 1e-10, "float32": 1e-4}



Count = Annotated[int, Field(ge=1, strict=True)]
Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False, strict=True)]


class BenchConfig(BaseModel):
    """What to measure, validated when made like metarep.config.schema.Config (a ConfigError with one
    line naming the field). None in the repetition fields means: the default for full or quick
    mode (`resolved`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    methods: tuple[str, ...] = METHODS
    n_tasks: Count = PAPER["n_tasks"]
    m_in: Count = PAPER["m_in"]
    m_out: Count = PAPER["m_out"]
    d: Count = PAPER["d"]
    width: Count = PAPER["width"]
    dtypes: tuple[str, ...] = DTYPES
    contenders: tuple[str, ...] | None = None      # None: every known contender
    repeats: Count | None = None                    # timed calls, vectorised contenders (20; quick 3)
    loop_repeats: Count | None = None               # timed calls, loop contenders (3; quick 1)
    warmup: Annotated[int, Field(ge=0, strict=True)] | None = None  # untimed calls after the check (2; quick 1)
    min_time: Seconds | None = None                 # and time vectorised ones for at least this long (0.5 s; quick 0)
    rounds: Count | None = None                     # interleaved blocks of the vectorised contenders (4; quick 1)
    settle: Annotated[float, Field(ge=0, le=60, strict=True)] | None = None  # idle seconds before each timed
    #                                                 block, at most a minute (0.3; quick 0)
    quick: bool = False
    alpha: Annotated[float, Field(allow_inf_nan=False, strict=True)] = 0.1
    seed: Annotated[int, Field(ge=0, strict=True)] = 0
    retain_freed_memory: bool = False               # glibc keeps freed memory (kernels.retain_freed_memory)
    busy_threshold: Seconds = 0.2                   # cores used by other processes that make a timing suspect
    busy_retries: Annotated[int, Field(ge=0, strict=True)] | None = None  # re-timings of a suspect vectorised
    #                                                 row (2; quick 0)
    busy_wait: Seconds = 5.0                        # seconds to wait before re-timing
    bandwidth: bool = True
    bandwidth_bytes: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None  # size of the read-bandwidth
    #                                                 probe (400 MB; quick 32 MB)
    population: bool = True
    pop_steps: Count | None = None                  # sequential population steps (10^5; quick 10^3)
    pop_batch: Count | None = None                  # seeds along the leading axis (256; quick 16)
    pop_batch_steps: Count | None = None            # steps of the batched run (200; quick 20)
    load: Annotated[int, Field(ge=0, le=64, strict=True)] = 0  # CPU-bound processes run beside the contenders

    def __init__(self, **values: Any):
        try:
            super().__init__(**values)
        except ValidationError as err:
            raise ConfigError(_one_line(err)) from None

    @field_validator("methods")
    @classmethod
    def _methods(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [m for m in value if m not in METHODS]
        if unknown:
            raise ValueError(f"must be among {', '.join(METHODS)}, got {unknown[0]!r}")
        return value

    @field_validator("dtypes")
    @classmethod
    def _dtypes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [dt for dt in value if dt not in DTYPES]
        if unknown:
            raise ValueError(f"must be among {', '.join(DTYPES)}, got {unknown[0]!r}")
        return value

    @field_validator("contenders")
    @classmethod
    def _contenders(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        unknown = [c for c in value or () if c not in _contenders.CONTENDERS]
        if unknown:
            raise ValueError(f"unknown contender(s) {unknown}; known: {list(_contenders.CONTENDERS)}")
        return value

    def busy_limit(self) -> float:
        """Cores other processes may keep busy, beyond the `load` ones, before a timing is suspect."""
        return self.busy_threshold + self.load

    def resolved(self) -> BenchConfig:
        """A copy with every None repetition field set for the mode."""
        q = self.quick
        defaults = {"repeats": 3 if q else 20, "loop_repeats": 1 if q else 3, "warmup": 1 if q else 2,
                    "bandwidth_bytes": 32e6 if q else 400e6, "pop_steps": 1000 if q else TARGET_POPULATION_STEPS,
                    "pop_batch": 16 if q else 256, "pop_batch_steps": 20 if q else 200,
                    "busy_retries": 0 if q else 2, "min_time": 0.0 if q else 0.5,
                    "rounds": 1 if q else 4, "settle": 0.0 if q else 0.3}
        values = self.model_dump()
        return BenchConfig(**{**values, **{k: v for k, v in defaults.items() if values[k] is None}})

    def validate(self) -> None:  # type: ignore[override]
        """Nothing to do: a BenchConfig is validated when it is made (kept for callers)."""


def _one_line(err: ValidationError) -> str:
    """`field: what it accepts (got value)`, from the first error."""
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"][:1])
    if first["type"] == "extra_forbidden":
        return f"bench: unknown setting {where!r}"
    text = f"{where}: {first['msg'].removeprefix('Value error, ')}"
    got = first.get("input")
    return text if "got" in text or got is None else f"{text} (got {got!r})"


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
