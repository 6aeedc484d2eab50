"""The experiment config: a validated schema, TOML loading and `--set` overrides.

A config is data: it is parsed with tomllib and validated, never executed or unpickled.
Every error names the key and what it accepts, as a one-line ConfigError.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_serializer, model_validator

from metarep.config.checks import check_covariance, check_limit, check_method, check_regime
from metarep.data.config import DataConfig, check_table_config, drop_synthetic_keys, refuse_synthetic_keys
from metarep.families import DEFAULT_FAMILY, get_family
from metarep.families import NoOptions as NoFamilyOptions
from metarep.families.problem import as_mean
from metarep.methods import DEFAULT_METHOD, NoHyper, get_method
from metarep.models import NoOptions, get_arch

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
    """[problem]: the task distribution. `family` picks it (metarep.families; "gaussian" is
    MATH 1), its own keys (`options`, e.g. sinusoid's amplitude) sit in the same table."""

    family: str = DEFAULT_FAMILY
    options: BaseModel = NoFamilyOptions()
    d: PositiveInt = 10
    k: PositiveInt = 2
    noise_std: NonNegativeFloat = 1.0
    task_mean: Number | list[Number] = 0.0
    task_cov: NonNegativeFloat | list[Number] | list[list[Number]] = 1.0
    seed: Annotated[int, Field(ge=0, strict=True)] = 0
    teacher: Literal["linear", "relu"] = "linear"

    @model_validator(mode="before")
    @classmethod
    def _family_options(cls, data):
        if not isinstance(data, dict) or "options" in data:
            return data
        name = data.get("family", DEFAULT_FAMILY)
        if not isinstance(name, str):
            raise ValueError(f"problem.family must be a string, got {name!r}")
        return _split_table(get_family(name).table(data), "problem", "family", DEFAULT_FAMILY,
                            set(_PROBLEM_KEYS), lambda n: get_family(n).Options)

    @model_serializer(mode="wrap")
    def _dump(self, handler):
        """The family's own keys as data; the default family writes neither (a config written
        before families existed keeps its resolved form and hash)."""
        out = handler(self)
        out["options"] = self.options.model_dump()
        if self.family == DEFAULT_FAMILY:
            del out["family"], out["options"]
        return out

    @model_validator(mode="after")
    def _consistent(self):
        if self.k > self.d and "k" not in get_family(self.family).fixed:  # a family's own k (sinusoid's 2) is right
            raise ValueError(f"problem.k must be <= problem.d = {self.d}, got {self.k}")
        # A scalar mean or covariance is valid for any k: only lists are checked (and built),
        # so a huge k is refused by the memory check instead of being allocated here.
        if isinstance(self.task_mean, list):
            as_mean(self.task_mean, self.k)
        if isinstance(self.task_cov, list):
            check_covariance(self.task_cov, self.k)
        return self


class ModelConfig(Section):
    """[model]: the network. `arch` picks the architecture (metarep.models), whose own keys
    (`options`, e.g. mlp's layers) sit in the same table; width is k', the head's input size."""

    arch: str = "linear"
    width: PositiveInt = 10
    init_scale: PositiveFloat = 1.0
    init_head_scale: NonNegativeFloat = 0.0
    options: BaseModel = NoOptions()

    @model_validator(mode="before")
    @classmethod
    def _arch_options(cls, data):
        return _split_table(data, "model", "arch", "linear", set(_MODEL_KEYS),
                            lambda name: get_arch(name).Options)


class MethodConfig(Section):
    """[method]: `name` picks the method (metarep.methods); its own hyper-parameters (`hyper`,
    e.g. burer-monteiro's lam and solver) sit in the same table."""

    name: str = DEFAULT_METHOD
    hyper: BaseModel = NoHyper()


_MODEL_KEYS = ("arch", "width", "init_scale", "init_head_scale")
_PROBLEM_KEYS = ("family", "d", "k", "noise_std", "task_mean", "task_cov", "seed", "teacher")


def _split_table(data, section: str, key: str, default: str, shared: set, schema) -> dict:
    """A flat TOML table as {shared keys..., <options>: schema(name)(rest)}: the keys that belong
    to the chosen `key` value are validated by its own schema (one-line error naming them)."""
    if not isinstance(data, dict) or "options" in data or "hyper" in data:
        return data
    name = data.get(key, default)
    if not isinstance(name, str):
        raise ValueError(f"{section}.{key} must be a string, got {name!r}")
    own = {k: v for k, v in data.items() if k not in shared}
    try:
        options = schema(name).model_validate(own)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        if first["type"] == "extra_forbidden":
            takes = ", ".join(schema(name).model_fields) or "no keys of its own"
            label = {"model": "arch", "problem": "family"}.get(section, section)
            raise ValueError(f"{section}.{where}: not a key of {label} {name!r} (it takes {takes})") from None
        raise ValueError(f"{section}.{where}: {first['msg'].removeprefix('Value error, ')} "
                         f"(got {_short(repr(first.get('input')))})") from None
    out = {k: v for k, v in data.items() if k in shared}
    out["hyper" if section == "method" else "options"] = options
    return out


_MOVED = {"method": 'method.name (write [method] name = "...")',
          "lam": "method.lam (burer-monteiro's ridge: write it in [method])",
          "solver": "method.solver (burer-monteiro's solver: write it in [method])"}


class TrainConfig(Section):
    """[train]: the task regime, the step sizes and the run's bookkeeping."""

    tasks: PositiveInt | Literal["inf", "online"] = 1000
    batch_tasks: PositiveInt = 100
    tasks_per_step: PositiveInt | None = None
    """mlp, a fixed set of tasks: how many of them one outer step uses, drawn afresh without
    replacement each step (stochastic gradient over the set); None: all of them"""
    m_in: PosIntOrInf = 10
    m_out: PosIntOrInf = 10
    alpha: PositiveFloat = 0.1
    beta: PositiveFloat = 0.05
    steps: Annotated[int, Field(ge=0, strict=True)] = 1000
    log_every: PositiveInt = 10
    seed: Annotated[int, Field(ge=0, strict=True)] = 0
    inner_steps: PositiveInt = 1
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    chunk_tasks: Annotated[int, Field(ge=0, strict=True)] = 0
    checkpoint_every: Annotated[int, Field(ge=0, strict=True)] = 0
    diverge_threshold: PositiveFloat = 1e8
    optimizer: Literal["gd", "adam"] = "gd"
    adam_betas: Annotated[list[Annotated[float, Field(ge=0, lt=1, strict=True)]],
                          Field(min_length=2, max_length=2)] = [0.9, 0.999]
    adam_eps: PositiveFloat = 1e-8

    @field_validator("tasks", "m_in", "m_out", mode="before")
    @classmethod
    def _inf_spellings(cls, value):
        """TOML's bare `inf` is a float; accept it as the string "inf"."""
        return INF if isinstance(value, float) and value == math.inf else value

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, data):
        for key, where in _MOVED.items():
            if isinstance(data, dict) and key in data:
                raise ValueError(f"train.{key} has moved to {where}")
        return data

    @model_validator(mode="after")
    def _optimizer_library(self):
        """Adam is torch.optim's: torch must be installed."""
        import importlib.util

        if self.optimizer == "adam" and importlib.util.find_spec("torch") is None:
            raise ValueError("train.optimizer = \"adam\" uses torch.optim: pip install -e '.[mlp]'")
        return self


TuneRule = Literal["gradient", "ridge", "lstsq", "bayes"]
TUNE_KEYS = ("validation_tasks", "tune_rules", "tune_steps", "tune_alpha", "tune_ridge")
VALIDATION_TASKS = 500
TUNE_DEFAULTS = {"tune_rules": ["gradient", "ridge", "lstsq", "bayes"],
                 "tune_steps": [1, 2, 5, 10, 20], "tune_ridge": [1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0]}


class TestConfig(Section):
    """[test]: adaptation to new tasks (MATH 6). `adapt = "tuned"` chooses the rule and its
    hyper-parameters among the grid of the tune_* keys by the mean score on validation tasks
    (metarep.engine.tuning); the tune_* keys and validation_tasks apply only then."""

    m_test: PositiveInt = 20
    adapt: Literal["default", "gradient", "ridge", "lstsq", "bayes", "tuned"] = "default"
    adapt_steps: Annotated[int, Field(ge=0, strict=True)] = 1
    alpha: PositiveFloat | None = None
    ridge: NonNegativeFloat = 1e-3
    tasks: PositiveInt = 1000
    seed: Annotated[int, Field(ge=0, strict=True)] = 1
    # The grid is filled in with TUNE_DEFAULTS when adapt = "tuned" (the resolved config shows
    # it); validation_tasks (synthetic tasks only) is VALIDATION_TASKS when left out. Given
    # without adapt = "tuned" they are refused: they would apply to nothing.
    validation_tasks: PositiveInt | None = None
    tune_rules: Annotated[list[TuneRule], Field(min_length=1)] | None = None
    tune_steps: Annotated[list[Annotated[int, Field(ge=0, strict=True)]], Field(min_length=1)] | None = None
    tune_alpha: Annotated[list[PositiveFloat], Field(min_length=1)] | None = None
    tune_ridge: Annotated[list[NonNegativeFloat], Field(min_length=1)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _tune_defaults(cls, data):
        if isinstance(data, dict) and data.get("adapt") == "tuned":
            return {**TUNE_DEFAULTS, **data}
        return data

    @model_validator(mode="after")
    def _tune_keys(self):
        if self.adapt != "tuned":
            for key in TUNE_KEYS:
                if getattr(self, key) is not None:
                    raise ValueError(f"test.{key} applies only with test.adapt = \"tuned\"")
        return self

    @property
    def n_validation(self) -> int:
        return VALIDATION_TASKS if self.validation_tasks is None else self.validation_tasks

    def tune_alphas(self, alpha: float) -> list[float]:
        """The step sizes tried: tune_alpha, or alpha (test.alpha, else train.alpha) halved,
        as is, and doubled."""
        return list(self.tune_alpha) if self.tune_alpha is not None else [alpha / 2, alpha, 2 * alpha]


class Config(Section):
    """A whole experiment. Sections: problem, model, method, train, test, data."""

    problem: ProblemConfig = ProblemConfig()
    model: ModelConfig = ModelConfig()
    method: MethodConfig = MethodConfig()
    train: TrainConfig = TrainConfig()
    test: TestConfig = TestConfig()
    data: DataConfig = DataConfig()

    @model_validator(mode="before")
    @classmethod
    def _method_hyper(cls, data):
        if not isinstance(data, dict) or not isinstance(data.get("method", {}), dict):
            return data
        model = data.get("model", {})
        arch = model.get("arch", "linear") if isinstance(model, dict) else "linear"
        if not isinstance(arch, str):
            return data
        get_arch(arch)
        method = _split_table(data.get("method", {}), "method", "name", DEFAULT_METHOD, {"name"},
                              lambda name: get_method(name, arch).Hyper)
        return {**data, "method": method}

    @model_validator(mode="before")
    @classmethod
    def _table_keys_first(cls, data):
        refuse_synthetic_keys(data)
        return data

    @model_validator(mode="after")
    def _consistent(self):
        check_regime(self)
        check_method(self)
        if self.data.source == "synthetic":
            get_family(self.problem.family).check(self.model.arch, needs_truth=self.method_spec.needs_truth)
            check_limit(self.problem, self.train)
        else:
            check_table_config(self)
        return self

    @property
    def method_spec(self):
        """The declaration of the configured method (metarep.methods.Method)."""
        return get_method(self.method.name, self.model.arch)

    @property
    def hyper(self) -> dict[str, Any]:
        """The keyword hyper-parameters its gradient/step takes: its own table plus the shared
        [train] keys it declares."""
        spec = self.method_spec
        return {**{k: getattr(self.train, k) for k in spec.train_keys}, **self.method.hyper.model_dump()}

    @property
    def adapt_rule(self) -> str:
        """The rule asked for, or the method's own (also the reference a tuned run is compared to)."""
        return self.method_spec.default_adapt if self.test.adapt in ("default", "tuned") else self.test.adapt

    @property
    def test_alpha(self) -> float:
        return self.train.alpha if self.test.alpha is None else self.test.alpha

    def to_dict(self) -> dict[str, Any]:
        """Plain data as the TOML file holds it (flat [model] and [method] tables), None dropped."""
        dumped = self.model_dump()
        dumped["model"] = {**{k: dumped["model"][k] for k in _MODEL_KEYS}, **self.model.options.model_dump()}
        dumped["method"] = {"name": self.method.name, **self.method.hyper.model_dump()}
        dumped["problem"] = self._problem_table(dumped["problem"])
        if self.data.source == "synthetic":  # the default source writes no [data] table
            del dumped["data"]
        else:
            drop_synthetic_keys(dumped)
        return {name: {k: v for k, v in section.items() if v is not None} for name, section in dumped.items()}

    def _problem_table(self, problem: dict) -> dict:
        """The flat [problem] table: the family's own keys beside the shared ones, the keys it
        does not read left out; `family` left out for the default (configs written before
        families existed keep their text and hash)."""
        family = get_family(self.problem.family)
        options = problem.pop("options", {})
        return {**{k: v for k, v in problem.items() if k not in family.foreign}, **options}


SECTIONS = ("problem", "model", "method", "train", "test", "data")


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
        raise ConfigError("config must be a table of sections [problem], [model], [method], [train], [test]")
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
