"""The registry of task families (`[problem] family`): where a run's tasks come from.

A family is a declaration of pure functions over its ground truth (`truth`, the object `make`
returns from the validated [problem] table): how it draws tasks and inputs, its true features and,
where one exists, the span they generate, its oracle, and the measures that need the ground
truth. Its own [problem] keys are its `Options` (validated like an arch's [model] keys). Adding
a family is one module that calls `register_family`.

The families are numerical code: nothing here imports config, engine, storage or the CLI.
"""

from __future__ import annotations

from metarep.families import gaussian, sinusoid  # registers the built-in families
from metarep.families.base import (
    Family,
    NoOptions,
    family_of,
    get_family,
    probe_inputs,
    register_family,
    registered,
    sample_inputs,
    sample_tasks,
    truth_arrays,
)

DEFAULT_FAMILY = gaussian.FAMILY.name

__all__ = ["DEFAULT_FAMILY", "Family", "NoOptions", "family_of", "gaussian", "get_family", "probe_inputs",
           "register_family", "registered", "sample_inputs", "sample_tasks", "sinusoid", "truth_arrays"]
