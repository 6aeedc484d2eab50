"""The experiment config: a validated schema, TOML loading and `--set` overrides.

A config is data: it is parsed with tomllib and validated, never executed or unpickled.
Every error names the key and what it accepts, as a one-line ConfigError.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from metarep.problem import as_covariance, as_mean

INF = "inf"
MAX_CONFIG_BYTES = 16 * 2**20
# Numbers are strict: an int is a valid float, but booleans and numeric strings are not numbers.
PositiveInt = Annotated[int, Field(ge=1, strict=True)]
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False, strict=True)]
NonNegativeFloat = Annotated[float, Field(ge=0, allow_inf_nan=False, strict=True)]
PosIntOrInf = Union[PositiveInt, Literal["inf"]]
Number = Annotated[float, Field(allow_inf_nan=False, strict=True)]


class ConfigError(ValueError):
    """A config that cannot run, with a message naming the key."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProblemConfig(Section):
    """[problem]: the task distribution (MATH 1)."""

    d: PositiveInt = 10
    k: PositiveInt = 2
    noise_std: NonNegativeFloat = 1.0
    task_mean: Union[Number, list[Number]] = 0.0
    task_cov: Union[NonNegativeFloat, list[Number], list[list[Number]]] = 1.0
    seed: Annotated[int, Field(ge=0, strict=True)] = 0

    @model_validator(mode="after")
    def _consistent(self):
        if self.k > self.d:
            raise ValueError(f"problem.k must be <= problem.d = {self.d}, got {self.k}")
        # A scalar mean or covariance is valid for any k: only lists are checked (and built),
        # so a huge k is refused by the memory check instead of being allocated here.
        if isinstance(self.task_mean, list):
            as_mean(self.task_mean, self.k)
        if isinstance(self.task_cov, list):
            _check_covariance(self.task_cov, self.k)
        return self


def _check_covariance(task_cov: list, k: int) -> None:
    """as_covariance's checks, without forming a k x k matrix for a diagonal."""
    if not task_cov or not isinstance(task_cov[0], list):
        if len(task_cov) != k:
            raise ValueError(f"problem.task_cov: a diagonal must have k={k} entries, got {len(task_cov)}")
        if min(task_cov) < 0:
            raise ValueError("problem.task_cov: entries (eigenvalues) must be >= 0")
        return
    if len(task_cov) != k or any(len(row) != k for row in task_cov):
        raise ValueError(f"problem.task_cov: a matrix must be {k} x {k}, got {len(task_cov)} rows of lengths "
                         f"{sorted({len(row) for row in task_cov})}")
    as_covariance(task_cov, k)


def _covariance_degeneracy(task_cov, k: int) -> tuple[bool, bool]:
    """(Sigma* is zero, Sigma* is singular), without forming a matrix for a scalar or a diagonal."""
    if not isinstance(task_cov, list):
        return task_cov == 0, task_cov == 0
    if not isinstance(task_cov[0], list):
        return max(task_cov) == 0, min(task_cov) == 0
    import numpy as np

    cov = np.asarray(task_cov, dtype=np.float64)
    return not cov.any(), int(np.linalg.matrix_rank(cov, hermitian=True)) < k


def _lambda_star_finite(p: ProblemConfig, t: TrainConfig) -> bool:
    """Whether theory.lambda_star gives finite numbers (and a solvable system) for these values;
    computed entrywise for a scalar or diagonal Sigma*, so a huge k costs nothing."""
    import numpy as np

    from metarep.theory import lambda_star

    inv_m = 0.0 if t.m_in == INF else 1.0 / t.m_in
    with np.errstate(all="ignore"):
        if p.k <= 256 or (isinstance(p.task_cov, list) and isinstance(p.task_cov[0], list)):
            try:  # exactly what the run will compute
                lam = lambda_star(as_covariance(p.task_cov, p.k), p.noise_std, t.alpha, t.m_in)
            except (np.linalg.LinAlgError, ArithmeticError, ValueError):
                return False
            return bool(np.isfinite(lam).all())
        diag = np.asarray(p.task_cov if isinstance(p.task_cov, list) else [p.task_cov], dtype=np.float64)
        trace = diag.sum() if isinstance(p.task_cov, list) else diag[0] * p.k
        inner = (1 + inv_m) * diag + (trace + np.float64(p.noise_std) ** 2) * inv_m
        lam = diag / inner / t.alpha
        return bool(np.isfinite(lam).all() and np.isfinite(inner).all() and (inner != 0).all())


class ModelConfig(Section):
    """[model]: the two-layer linear network x^T B w, B d x width."""

    width: PositiveInt = 10
    init_scale: PositiveFloat = 1.0
    init_head_scale: NonNegativeFloat = 0.0


class TrainConfig(Section):
    """[train]: the method, the task regime and the step sizes."""

    method: str = "fo-anil"
    tasks: Union[PositiveInt, Literal["inf", "online"]] = 1000
    batch_tasks: PositiveInt = 100
    m_in: PosIntOrInf = 10
    m_out: PosIntOrInf = 10
    alpha: PositiveFloat = 0.1
    beta: PositiveFloat = 0.05
    steps: Annotated[int, Field(ge=0, strict=True)] = 1000
    log_every: PositiveInt = 10
    seed: Annotated[int, Field(ge=0, strict=True)] = 0
    inner_steps: PositiveInt = 1
    lam: NonNegativeFloat = 0.0
    solver: Literal["gd", "alternating"] = "gd"
    chunk_tasks: Annotated[int, Field(ge=0, strict=True)] = 0
    checkpoint_every: Annotated[int, Field(ge=0, strict=True)] = 0
    diverge_threshold: PositiveFloat = 1e8

    @field_validator("tasks", "m_in", "m_out", mode="before")
    @classmethod
    def _inf_spellings(cls, value):
        """TOML's bare `inf` is a float; accept it as the string "inf"."""
        return INF if isinstance(value, float) and value == math.inf else value

    @field_validator("method")
    @classmethod
    def _known_method(cls, name):
        from metarep.methods import get_method

        get_method(name)
        return name


class TestConfig(Section):
    """[test]: adaptation to new tasks (MATH 6)."""

    m_test: PositiveInt = 20
    adapt: Literal["default", "gradient", "ridge", "lstsq", "bayes"] = "default"
    adapt_steps: Annotated[int, Field(ge=0, strict=True)] = 1
    alpha: Union[PositiveFloat, None] = None
    ridge: NonNegativeFloat = 1e-3
    tasks: PositiveInt = 1000
    seed: Annotated[int, Field(ge=0, strict=True)] = 1


class Config(Section):
    """A whole experiment. Sections: problem, model, train, test."""

    problem: ProblemConfig = ProblemConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    test: TestConfig = TestConfig()

    @model_validator(mode="after")
    def _regimes(self):
        from metarep.methods import get_method

        method = get_method(self.train.method)
        t = self.train
        if t.tasks == INF and method.population_gradient is None:
            raise ValueError(f"train.tasks = \"inf\" needs a method with an exact population form; "
                             f"{t.method!r} has none: use tasks = \"online\" with a large batch_tasks")
        if t.tasks == INF and method.fit is not None:
            raise ValueError(f"train.tasks = \"inf\" is for iterative methods, not {t.method!r}")
        if t.tasks != INF and INF in (t.m_in, t.m_out):
            raise ValueError("train.m_in and train.m_out may be \"inf\" only with train.tasks = \"inf\"")
        if t.tasks == INF and t.inner_steps != 1:
            raise ValueError("train.inner_steps must be 1 with train.tasks = \"inf\": the population forms "
                             "are derived for one inner step; use tasks = \"online\" for more")
        if method.init is not None and t.tasks == "online":
            raise ValueError(f"train.tasks = \"online\" does not fit {t.method!r}, which keeps one head per "
                             f"task: give a number of tasks")
        if t.method == "moments" and self.model.width > self.problem.d:
            raise ValueError(f"model.width must be <= problem.d = {self.problem.d} for 'moments' "
                             f"(eigenvectors of a d x d matrix), got {self.model.width}")
        if self.test.adapt == "bayes" and t.method != "oracle":
            raise ValueError("test.adapt = \"bayes\" is the posterior mean on the true features: only for "
                             "train.method = \"oracle\"")
        zero, singular = _covariance_degeneracy(self.problem.task_cov, self.problem.k)
        if zero and self.problem.noise_std ** 2 == 0:  # (a subnormal noise_std squares to 0 too)
            raise ValueError("problem.task_cov and problem.noise_std are both 0: every task is the same and the "
                             "limit Lambda* is undefined; make one of them positive")
        if singular and t.m_in == INF:
            raise ValueError("train.m_in = \"inf\" needs problem.task_cov without zero eigenvalues (the limit "
                             "Lambda* inverts it): make its entries positive or use a finite train.m_in")
        if not math.isfinite(self.problem.noise_std * self.problem.noise_std):
            raise ValueError(f"problem.noise_std is too large (its square overflows), got {self.problem.noise_std}")
        if not _lambda_star_finite(self.problem, t):
            raise ValueError("the limit Lambda* (MATH 5) is not a finite number for these values of "
                             "problem.task_cov, problem.noise_std and train.alpha: they are too close to 0 "
                             "or too large")
        return self

    @property
    def adapt_rule(self) -> str:
        from metarep.methods import get_method

        return get_method(self.train.method).default_adapt if self.test.adapt == "default" else self.test.adapt

    @property
    def test_alpha(self) -> float:
        return self.train.alpha if self.test.alpha is None else self.test.alpha

    def to_dict(self) -> dict[str, Any]:
        """Plain data, with None values dropped (TOML has no null)."""
        return {name: {k: v for k, v in section.items() if v is not None}
                for name, section in self.model_dump().items()}


SECTIONS = ("problem", "model", "train", "test")


def _key(part) -> str:
    """A key as written in messages: plain when it is a simple name, else quoted (one line, bounded)."""
    text = str(part)
    if text.isprintable() and text.strip() == text and text and len(text) <= 60:
        return text
    return _short(repr(text))


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _format_error(err: ValidationError) -> str:
    """One line: the key, what it accepts (every alternative of a union), what it got."""
    errors = err.errors()
    loc = tuple(_key(p) for p in errors[0]["loc"])
    where = ".".join(loc[:2]) if loc and loc[0] in SECTIONS else ".".join(loc[:1])
    same = [e for e in errors if tuple(_key(p) for p in e["loc"])[:2] == loc[:2]]
    if errors[0]["type"] == "extra_forbidden":
        return f"{where}: unknown key (allowed keys are listed in README.md, section Config)"
    msgs = list(dict.fromkeys(e["msg"].removeprefix("Value error, ") for e in same))
    text = "; or ".join(msgs)
    if not text.startswith(where):
        text = f"{where}: {text}" if where else text
    got = errors[0].get("input")
    if "got" not in text and got is not None and not isinstance(got, dict):
        text += f" (got {_short(repr(got))})"
    return text


def validate(data: dict[str, Any]) -> Config:
    """A Config from plain data, or ConfigError with a one-line message."""
    if not isinstance(data, dict):
        raise ConfigError("config must be a table of sections [problem], [model], [train], [test]")
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_error(err)) from None
    except ValueError as err:
        raise ConfigError(str(err)) from None
    except RecursionError:
        raise ConfigError("config: values are nested too deeply") from None
    except ArithmeticError as err:
        raise ConfigError(f"config: a value is out of range ({err})") from None


def parse_value(text: str) -> Any:
    """A --set value as a TOML value (numbers, lists, booleans, quoted strings), else a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
    except RecursionError:
        raise ConfigError(f"--set value nested too deeply: {_short(repr(text))}") from None


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `section.key=value` overrides to plain config data (a new dict)."""
    out = {name: dict(section) if isinstance(section, dict) else section for name, section in data.items()}
    for item in overrides:
        key, sep, value = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not section or not name:
            raise ConfigError(f"--set expects section.key=value, got {item!r}")
        table = out.setdefault(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{section}: must be a table")
        table[name] = parse_value(value.strip())
    return out


def read_toml(path: str | Path) -> dict[str, Any]:
    """Parse a TOML file into plain data, with errors as ConfigError."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as err:
        raise ConfigError(f"cannot read config {str(path)!r}: {err.strerror or err}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config {str(path)!r} is larger than {MAX_CONFIG_BYTES // 2**20} MiB: not a config file")
    try:
        return tomllib.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as err:
        raise ConfigError(f"config {str(path)!r} is not UTF-8 text (byte {err.start})") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config {str(path)!r} is not valid TOML: {err}") from None
    except RecursionError:
        raise ConfigError(f"config {str(path)!r}: values are nested too deeply") from None


def load(path: str | Path, overrides: list[str] = ()) -> Config:
    """Read, override and validate a config file."""
    return validate(apply_overrides(read_toml(path), list(overrides)))


def is_inf(value) -> bool:
    return value == INF or (isinstance(value, float) and math.isinf(value))
