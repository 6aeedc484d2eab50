"""[data]: where the tasks come from (the synthetic model, a table file, or a bundled dataset).

The source is named by `source`, or inferred from the keys: `path` means a table file,
`dataset` a bundled dataset, neither the synthetic model. A key that does not apply to the
source is refused with one line naming it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

DATASETS = ("chem97", "exam", "mathachieve", "star")
# The keys each source reads; every other key (but `source`) is refused for it.
APPLIES = {
    "synthetic": (),
    "file": ("path", "task", "target", "features", "categorical", "test_fraction", "seed", "draw", "missing",
             "standardize", "intercept"),
    "dataset": ("dataset", "test_fraction", "seed", "draw", "missing", "standardize", "intercept"),
}
Name = Annotated[str, Field(min_length=1, strict=True)]


class DataConfig(BaseModel):
    """[data]: `source = "synthetic"` (default), `"file"` or `"dataset"`.

    file:    path (CSV or Parquet), task (the column naming the task), target (the response),
             features (default: every other column), categorical (numeric columns to one-hot
             encode as well as the non-numeric ones);
    dataset: dataset, one of DATASETS (bundled school data, tasks are schools);
    both:    test_fraction of the tasks held out (a seeded draw over tasks), seed (the split and
             the order of rows within each task), draw ("every_step": training draws
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
    seed: Annotated[int, Field(ge=0, strict=True)] | None = None
    draw: Literal["every_step", "once"] | None = None
    missing: Literal["refuse", "drop"] | None = None
    standardize: Annotated[bool, Field(strict=True)] | None = None
    intercept: Annotated[bool, Field(strict=True)] | None = None

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


def check_table_config(config) -> None:
    """What a table source asks of the rest of the config (ValueError, one line): the
    training tasks are the table's (no "inf" or "online"), there is no ground truth, and only
    the linear model reads tasks from a source."""
    source = f"data.source = \"{config.data.source}\""
    if config.train.tasks in ("inf", "online"):
        raise ValueError(f"train.tasks = \"{config.train.tasks}\" is for the synthetic model; with {source} the "
                         "training tasks are the table's: leave train.tasks out")
    if config.method_spec.needs_truth:
        raise ValueError(f"method.name = \"{config.method.name}\" needs the true representation B*, which "
                         f"{source} does not have")
    if config.model.arch != "linear":
        raise ValueError(f"model.arch = \"{config.model.arch}\" does not read tasks from {source} (only "
                         "\"linear\" does)")
