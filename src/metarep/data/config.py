"""[data]: where the tasks come from (the synthetic model, a table file, or a bundled dataset).

The source is named by `source`, or inferred from the keys: `path` means a table file,
`dataset` a bundled dataset, neither the synthetic model. A key that does not apply to the
source is refused with one line naming it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DATASETS = ("chem97", "exam", "mathachieve", "star")
# The keys each source reads; every other key (but `source`) is refused for it.
APPLIES = {
    "synthetic": (),
    "file": ("path", "task", "target", "features", "categorical", "test_fraction", "validation_fraction", "seed",
             "draw", "missing", "standardize", "intercept"),
    "dataset": ("dataset", "test_fraction", "validation_fraction", "seed", "draw", "missing", "standardize",
                "intercept"),
}
# The share of the training tasks set aside as validation tasks when test.adapt = "tuned".
VALIDATION_FRACTION = 0.2
Name = Annotated[str, Field(min_length=1, strict=True)]


class DataConfig(BaseModel):
    """[data]: `source = "synthetic"` (default), `"file"` or `"dataset"`.

    file:    path (CSV or Parquet), task (the column naming the task), target (the response),
             features (default: every other column), categorical (numeric columns to one-hot
             encode as well as the non-numeric ones);
    dataset: dataset, one of DATASETS (bundled school data, tasks are schools);
    both:    test_fraction of the tasks held out (a seeded draw over tasks), validation_fraction
             of the other tasks set aside for tuning (test.adapt = "tuned" only; a seeded draw
             over tasks), seed (the splits and the order of rows within each task), draw ("every_step": training draws
             m_in + m_out rows of each training task afresh every outer step; "once": one draw,
             fixed), missing ("refuse" rows with missing values, the default for files, or
             "drop" them, the default for bundled datasets; either way the count is reported),
             standardize (features and target, with training-task statistics), intercept
             (a constant feature appended after standardising).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Literal["synthetic", "file", "dataset"] = "synthetic"
    path: Name | None = None
    task: Name | None = None
    target: Name | None = None
    features: list[Name] | None = None
    categorical: list[Name] | None = None
    dataset: Literal["chem97", "exam", "mathachieve", "star"] | None = None
    # Defaults of the keys both table sources read: filled in for them (so that the resolved
    # config shows them), left None for the synthetic source (so that it dumps to no keys).
    test_fraction: Annotated[float, Field(gt=0, lt=1, strict=True)] | None = None
    # Only with test.adapt = "tuned" (VALIDATION_FRACTION when left out); see validation_fraction().
    validation_fraction: Annotated[float, Field(gt=0, lt=1, strict=True)] | None = None
    seed: Annotated[int, Field(ge=0, strict=True)] | None = None
    draw: Literal["every_step", "once"] | None = None
    missing: Literal["refuse", "drop"] | None = None
    standardize: Annotated[bool, Field(strict=True)] | None = None
    intercept: Annotated[bool, Field(strict=True)] | None = None

    @field_validator("path")
    @classmethod
    def _absolute(cls, path: str | None) -> str | None:
        """A relative path is taken from the current directory and kept absolute, so that a
        resumed run or a sweep's worker reads the same file from anywhere."""
        return None if path is None else str(Path(path).expanduser().absolute())

    @model_validator(mode="before")
    @classmethod
    def _resolve_source(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        source = data.get("source")
        if source is None:
            if "path" in data and "dataset" in data:
                raise ValueError("data: give either path (a table file) or dataset (a bundled dataset), not both")
            source = "file" if "path" in data else "dataset" if "dataset" in data else "synthetic"
        if source not in ("file", "dataset"):
            return {"source": source, **data}
        defaults = {"test_fraction": 0.2, "seed": 0, "draw": "every_step",
                    "missing": "drop" if source == "dataset" else "refuse", "standardize": True, "intercept": True}
        return {**defaults, **data, "source": source}

    @model_validator(mode="after")
    def _applies(self):
        allowed = APPLIES[self.source]
        for key in sorted(self.model_fields_set - {"source"}):
            if getattr(self, key) is not None and key not in allowed:
                where = [s for s, keys in APPLIES.items() if key in keys]
                raise ValueError(f"data.{key} does not apply to data.source = \"{self.source}\" "
                                 f"(only to {' or '.join(repr(s) for s in where)})")
        if self.source == "file":
            for key in ("path", "task", "target"):
                if getattr(self, key) is None:
                    raise ValueError(f"data.{key} is required with data.source = \"file\"")
            named = [self.task, self.target, *(self.features or ())]
            if len(set(named)) < len(named):
                raise ValueError(f"data: task, target and features must be distinct columns, got {named}")
            if self.features is not None and not self.features:
                raise ValueError("data.features: give at least one column (or leave it out: every other column)")
        if self.source == "dataset" and self.dataset is None:
            raise ValueError(f"data.dataset is required with data.source = \"dataset\" (one of {', '.join(DATASETS)})")
        return self

    @property
    def synthetic(self) -> bool:
        return self.source == "synthetic"


# Keys only the synthetic model reads (None: the whole table): refused when given with a table
# source, and left out of its resolved config. (test.seed is kept: sweeps set it; it is unused.)
SYNTHETIC_KEYS = {"problem": None, "train": ("tasks", "batch_tasks"), "test": ("tasks", "validation_tasks")}


def refuse_synthetic_keys(raw: Any) -> None:
    """check_table_config's first rule, on the config as written, before the sections' own checks
    run: problem.task_cov checked against the default problem.k would name the wrong mistake."""
    data = raw.get("data") if isinstance(raw, dict) else None
    if not isinstance(data, dict):
        return
    source = data.get("source") or ("file" if "path" in data else "dataset" if "dataset" in data else None)
    if source not in ("file", "dataset"):
        return
    for section, keys in SYNTHETIC_KEYS.items():
        given = raw.get(section)
        for key in sorted(given if keys is None else set(given) & set(keys)) if isinstance(given, dict) else ():
            raise ValueError(f"{section}.{key} does not apply to data.source = \"{source}\" (the tasks, their number "
                             "and d are the table's): leave it out")


def check_table_config(config) -> None:
    """What a table source asks of the rest of the config (ValueError, one line): no key of
    the synthetic model (the training tasks and d are the table's), no method that needs the
    ground truth, and the linear model (the one that reads tasks from a source)."""
    source = f"data.source = \"{config.data.source}\""
    for section, keys in SYNTHETIC_KEYS.items():
        # `options` is always set (a section's before-validator fills it in); the family's own keys,
        # when written, are refused by refuse_synthetic_keys from the config as written
        given = getattr(config, section).model_fields_set - {"options"}
        for key in sorted(given if keys is None else given & set(keys)):
            raise ValueError(f"{section}.{key} does not apply to {source} (the tasks, their number and d are "
                             "the table's): leave it out")
    if config.data.validation_fraction is not None and config.test.adapt != "tuned":
        raise ValueError("data.validation_fraction applies only with test.adapt = \"tuned\" (other rules train on "
                         "every training task)")
    if config.method_spec.needs_truth:
        raise ValueError(f"method.name = \"{config.method.name}\" needs the true representation B*, which "
                         f"{source} does not have")
    if config.model.arch != "linear":
        raise ValueError(f"model.arch = \"{config.model.arch}\" does not read tasks from {source} (only "
                         "\"linear\" does)")


def validation_fraction(config) -> float:
    """The share of the training tasks a table source sets aside as validation tasks: none
    unless test.adapt = "tuned", then data.validation_fraction (VALIDATION_FRACTION when left out)."""
    if config.test.adapt != "tuned":
        return 0.0
    given = config.data.validation_fraction
    return VALIDATION_FRACTION if given is None else given


def drop_synthetic_keys(dumped: dict) -> None:
    """Remove SYNTHETIC_KEYS from a config's plain data (in place)."""
    for section, keys in SYNTHETIC_KEYS.items():
        if keys is None:
            dumped.pop(section, None)
        else:
            for key in keys:
                dumped.get(section, {}).pop(key, None)
