"""One test-time protocol for every method: a rule and its hyper-parameters chosen on validation
tasks, then scored on the test tasks.

A source scores rules with `score(rules, which, progress) -> (len(rules), T)` per-task scores
(excess risk or MSE) on its "validation" or "test" tasks, all rules on the same tasks (paired).
`run` asks for the test scores of one rule, or (tuning) the validation scores of every candidate
of the grid, picks the lowest mean, and asks for the test scores of the default rule and the
chosen one. The test tasks never enter the choice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import product
from typing import Protocol

import numpy as np

from metarep.linear.adapt import summarize


@dataclass(frozen=True)
class Rule:
    """A test-time rule (adapt.fit_heads's `rule`) with its hyper-parameters: `steps` and
    `alpha` for "gradient", `ridge` for "ridge"; the others read none."""

    adapt: str
    steps: int = 1
    alpha: float = 0.0
    ridge: float = 0.0

    def keywords(self) -> dict:
        return {"steps": self.steps, "alpha": self.alpha, "ridge": self.ridge}

    def describe(self) -> dict:
        """The rule as summary.json names it (hyper-parameters it does not read are null)."""
        gradient = self.adapt == "gradient"
        return {"adapt": self.adapt, "adapt_steps": self.steps if gradient else None,
                "alpha": self.alpha if gradient else None, "ridge": self.ridge if self.adapt == "ridge" else None}


def grid(rules: Sequence[str], *, steps: Sequence[int], alphas: Sequence[float],
         ridges: Sequence[float]) -> tuple[Rule, ...]:
    """Every rule of `rules` with every value of its hyper-parameters: gradient (steps x alphas),
    ridge (ridges), lstsq and bayes (one each)."""
    out: list[Rule] = []
    for rule in rules:
        if rule == "gradient":
            out += [Rule("gradient", steps=s, alpha=a) for s, a in product(steps, alphas)]
        elif rule == "ridge":
            out += [Rule("ridge", ridge=r) for r in ridges]
        else:
            out.append(Rule(rule))
    return tuple(out)


def choose(means: np.ndarray) -> int:
    """The index of the lowest finite mean (the first on ties); 0 when none is finite."""
    finite = np.where(np.isfinite(means), means, np.inf)
    return int(np.argmin(finite)) if np.isfinite(finite).any() else 0


class Progress:
    """Counts scored tasks for `on_chunk(done, total)`; `check()` raises KeyboardInterrupt
    when `should_stop()` says so (called before each chunk)."""

    def __init__(self, total: int, on_chunk: Callable[[int, int], None] | None = None,
                 should_stop: Callable[[], bool] | None = None):
        self.total, self.done = total, 0
        self.on_chunk, self.should_stop = on_chunk, should_stop

    def check(self) -> None:
        if self.should_stop is not None and self.should_stop():
            raise KeyboardInterrupt("evaluation stopped")

    def chunk(self, n: int) -> None:
        self.done += n
        if self.on_chunk is not None:
            self.on_chunk(self.done, self.total)


class Score(Protocol):
    def __call__(self, rules: Sequence[Rule], which: str, progress: Progress) -> np.ndarray: ...


@dataclass(frozen=True)
class Outcome:
    """The asked rule's test scores; with tuning, the default and the chosen rule's validation and
    test scores (mean, se) and the grid's size."""

    test: np.ndarray
    tuned: dict | None = None


def run(score: Score, rule: Rule, *, candidates: Sequence[Rule] | None = None, tasks: dict[str, int],
        on_chunk=None, should_stop=None) -> Outcome:
    """Score `rule` on the test tasks or, with `candidates` (tuning, `rule` being the default),
    choose among `rule` and the candidates by mean validation score and score both on the test
    tasks. `tasks` gives the number of "validation" and "test" tasks (for the progress count)."""
    if candidates is None:
        progress = Progress(tasks["test"], on_chunk, should_stop)
        return Outcome(score([rule], "test", progress)[0])
    rules = [rule, *(c for c in candidates if c != rule)]
    progress = Progress(tasks["validation"] + tasks["test"], on_chunk, should_stop)
    validation = score(rules, "validation", progress)
    chosen = rules[choose(validation.mean(axis=1))]
    test = score([rule, chosen] if chosen != rule else [rule], "test", progress)
    default_val, chosen_val = summarize(validation[0]), summarize(validation[rules.index(chosen)])
    tuned = {"chosen": chosen, "default": rule, "validation": chosen_val, "default_validation": default_val,
             "test": summarize(test[-1]), "default_test": summarize(test[0]), "candidates": len(rules),
             "validation_tasks": int(validation.shape[1])}
    return Outcome(test[-1], tuned)


def tuned_summary(outcome: Outcome, key: str) -> dict | None:
    """The `tuned` object of summary.json's test section, scores named `key` ("excess_risk", "mse")."""
    t = outcome.tuned
    if t is None:
        return None
    return {**t["chosen"].describe(), "validation": t["validation"][0], "validation_se": t["validation"][1],
            key: t["test"][0], f"{key}_se": t["test"][1],
            "default": {**t["default"].describe(), "validation": t["default_validation"][0],
                        "validation_se": t["default_validation"][1], key: t["default_test"][0],
                        f"{key}_se": t["default_test"][1]},
            "candidates": t["candidates"], "validation_tasks": t["validation_tasks"]}
