"""A table config with a key of the synthetic model is refused naming that key, before the
key's own checks (which would name a mistake the user did not make)."""

from __future__ import annotations

import pytest

from metarep.config.schema import ConfigError, validate


@pytest.mark.parametrize("problem, key", [({"task_cov": [1.0, 2.0, 3.0]}, "problem.task_cov"),
                                          ({"k": 5}, "problem.k"), ({"d": 3, "k": 4}, "problem.d")])
def test_a_synthetic_key_with_a_table_source_says_it_does_not_apply(problem, key):
    raw = {"problem": problem, "data": {"path": "x.csv", "task": "school", "target": "y"}}
    with pytest.raises(ConfigError, match=rf"^{key} does not apply to data.source = \"file\""):
        validate(raw)
    raw["data"] = {"dataset": "exam"}
    with pytest.raises(ConfigError, match=rf"^{key} does not apply to data.source = \"dataset\""):
        validate(raw)
