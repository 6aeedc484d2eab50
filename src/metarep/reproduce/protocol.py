"""The two test-time protocols the reproductions report side by side, read from a run's test
section: the method's own rule (the paper's: one head step for the meta-learners) and the tuned
rule (`[test] adapt = "tuned"`: rule and hyper-parameters chosen on validation tasks,
metarep.engine.tuning), scored on the same test tasks."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from metarep.reproduce.common import fmt


def rule_text(rule: dict | None) -> str:
    """A rule of summary.json's test section (adapt, adapt_steps, alpha, ridge) in a few words."""
    if not rule:
        return "-"
    adapt = rule.get("adapt")
    if adapt == "gradient":
        steps = rule.get("adapt_steps")
        return f"{steps} step{'' if steps == 1 else 's'} of {fmt(rule.get('alpha'))}"
    if adapt == "ridge":
        return f"ridge {fmt(rule.get('ridge'))}"
    return str(adapt)


def scores(test: dict | None, key: str = "excess_risk") -> dict:
    """own, own_se (the method's own rule), tuned, tuned_se, tuned_validation, tuned_rule (the
    chosen rule in words); the tuned entries are None when the run was not tuned."""
    test = test or {}
    tuned = test.get("tuned")
    if not tuned:
        return {"own": test.get(key), "own_se": test.get(f"{key}_se"), "tuned": None, "tuned_se": None,
                "tuned_validation": None, "tuned_rule": None}
    default = tuned["default"]
    return {"own": default.get(key), "own_se": default.get(f"{key}_se"), "tuned": tuned.get(key),
            "tuned_se": tuned.get(f"{key}_se"), "tuned_validation": tuned.get("validation"),
            "tuned_rule": rule_text(tuned)}


def chosen(rules: Sequence[str | None]) -> str:
    """The rules chosen over seeds or splits, most frequent first: 'ridge 0.1 (4), ridge 1 (1)'."""
    counts = Counter(r for r in rules if r)
    if not counts:
        return "-"
    if len(counts) == 1:
        return next(iter(counts))
    return ", ".join(f"{r} ({n})" for r, n in counts.most_common())
