"""Where training and test tasks come from: the synthetic model (MATH 1), or a table of real
tasks (metarep.data). The linear experiment asks a source for each step's tasks and for the
test section of the summary; it never needs to know which source it has."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from metarep import families, seeds
from metarep.engine import tuning
from metarep.engine.protocol import LOWER_BETA, LOWER_TEST_ALPHA, NARROW_TUNING, Advice
from metarep.engine.tuning import Rule
from metarep.families.problem import Problem
from metarep.families.tasks import Tasks
from metarep.linear.adapt import empirical_prior, excess_risk, expected_excess_risk_one_step, fit_heads, summarize
from metarep.linear.params import Params
from metarep.linear.random_effects import Prior, Stats, stacked_stats

# Test tasks are drawn and scored this many at a time (bounded working memory).
TEST_CHUNK = 2048


class TaskSource(Protocol):
    """truth: the ground truth (B*, mu*, Sigma*) where it is known, else None;
    regime: "finite" (a fixed set of tasks), "online" (fresh tasks every step) or "population";
    d: the input dimension; needs_rng: whether `training_tasks` draws from the run's task stream
    (whose state is checkpointed)."""

    @property
    def truth(self) -> Problem | None: ...

    @property
    def regime(self) -> str: ...

    @property
    def d(self) -> int: ...

    @property
    def needs_rng(self) -> bool: ...

    def training_tasks(self, rng: np.random.Generator | None) -> Tasks:
        """The tasks of one outer step (the fixed set, or a fresh draw from `rng`)."""
        ...

    def evaluate(self, B: np.ndarray, w: np.ndarray, config: Any, *, on_chunk=None, should_stop=None) -> dict:
        """The test section of the summary for the representation B and the shared head w
        (on_chunk(done, total) after each chunk of tasks; should_stop() before each)."""
        ...


class FromSource:
    """For an experiment with a `source`: its regime and its ground truth (`problem`, None when
    unknown) are the source's."""

    source: TaskSource

    @property
    def regime(self) -> str:
        return self.source.regime

    @property
    def problem(self):
        return self.source.truth


@dataclass(frozen=True)
class SyntheticSource:
    """Tasks drawn from the model of MATH 1: a fixed set of train.tasks tasks, fresh tasks every
    step ("online"), or none at all ("inf": the population dynamics use only the moments)."""

    truth: Problem
    regime: str
    tasks: Tasks | None
    batch_tasks: int
    m_in: Any
    m_out: Any

    @property
    def d(self) -> int:
        return self.truth.d

    @property
    def needs_rng(self) -> bool:
        return self.regime == "online"

    def training_tasks(self, rng: np.random.Generator | None) -> Tasks:
        if self.tasks is not None:
            return self.tasks
        assert rng is not None, "online tasks need the task stream's generator"
        return families.sample_tasks(self.truth, self.batch_tasks, self.m_in, self.m_out, rng)

    def evaluate(self, B: np.ndarray, w: np.ndarray, config: Any, *, on_chunk=None, should_stop=None) -> dict:
        """Excess risk on test.tasks new tasks after test-time adaptation (MATH 6), mean and s.e.
        Test (and validation) tasks depend only on the problem and test.seed, so every method
        meets the same tasks. on_chunk(done, total) follows the scored tasks; should_stop() is
        asked before each chunk (KeyboardInterrupt when it says so)."""
        problem = self.truth
        prior = head_prior(config, B, w, self.prior_stats(config, stacked_stats))

        def score_chunk(rules, tasks):
            return np.stack([excess_risk(B, fit_heads(r.adapt, B, w, tasks.X_in, tasks.y_in, problem=problem,
                                                      prior=prior, **r.keywords()), problem.B_star, tasks.w_star)
                             for r in rules])

        def score(rules, which, progress):
            return chunked_scores(problem, rules, config, which, progress, score_chunk)

        outcome = run_protocol(score, config, admits=tuned_rules(config, prior), on_chunk=on_chunk,
                               should_stop=should_stop)
        head = headline_rule(outcome, config)
        expected = None
        if head.adapt == "gradient" and head.steps == 1:
            expected = expected_excess_risk_one_step(B, w, problem, alpha=head.alpha, m_test=config.test.m_test)
        mean, se = summarize(outcome.test)
        return {"excess_risk": mean, "excess_risk_se": se, "excess_risk_expected": expected,
                **test_keys(head, config), "tasks": config.test.tasks,
                "tuned": tuning.tuned_summary(outcome, "excess_risk")}

    def training_stats(self, config) -> Stats:
        """The training tasks' sufficient statistics (every row): the fixed set, or (online,
        population) train.batch_tasks tasks from the stream prior_tasks of train.seed."""
        return stacked_stats(self.prior_tasks(config))

    def prior_tasks(self, config) -> Tasks:
        """The training tasks an empirical prior is fitted to (see training_stats)."""
        if self.tasks is not None:
            return self.tasks
        if "inf" in (self.m_in, self.m_out):
            raise ValueError("test.adapt = \"bayes\" fits its prior to training tasks: it needs finite "
                             "train.m_in and train.m_out")
        return families.sample_tasks(self.truth, self.batch_tasks, self.m_in, self.m_out,
                            seeds.rng(config.train.seed, "prior_tasks"))

    def prior_stats(self, config, stats):
        """`lambda: stats(self.prior_tasks(config))`, or None where a tuned run has no training rows
        to fit a prior to (m_in or m_out "inf": "bayes" leaves the grid)."""
        if config.adapt_rule != "bayes" and "inf" in (self.m_in, self.m_out):
            return None
        return lambda: stats(self.prior_tasks(config))


def head_prior(config, B: np.ndarray, w: np.ndarray, stats) -> Prior | None:
    """The prior of the "bayes" rule: the empirical one (adapt.empirical_prior, from the training
    tasks' statistics `stats()`) when the run asks for "bayes" or tunes over it and its method
    does not know the truth; None otherwise (the oracle's "bayes" is the true prior; `stats`
    None: no training rows to fit it to)."""
    method = config.method_spec
    if not wants_bayes(config) or method.needs_truth or stats is None:
        return None
    return optional_prior(config, lambda: empirical_prior(method, Params(B, w), stats(), **config.hyper))


def optional_prior(config, fit) -> Prior | None:
    """fit(), or None where only the tuned grid wants the prior and degenerate training rows
    (no noise, one row per task) leave it without a fit: "bayes" leaves the grid. A run that
    asks for "bayes" itself fails as any numerical failure does (diverged at test time)."""
    if config.adapt_rule == "bayes":
        return fit()
    try:
        return fit()
    except np.linalg.LinAlgError:
        return None


def wants_bayes(config) -> bool:
    """Whether the run asks for the "bayes" rule, or tunes over it."""
    te = config.test
    return config.adapt_rule == "bayes" or (te.adapt == "tuned" and "bayes" in te.tune_rules)


def tuned_rules(config, prior: Prior | None) -> tuple[str, ...]:
    """The rules the tuned grid may take: the method's, "bayes" only with a prior (the empirical
    one fitted to the training tasks, or the oracle's true one)."""
    method = config.method_spec
    rules = tuple(r for r in method.adapt_rules if r != "bayes")
    true_prior = method.needs_truth and "bayes" in method.adapt_rules
    return (*rules, "bayes") if prior is not None or true_prior else rules


def asked_rule(config) -> Rule:
    """The rule the config asks for (the method's own under "default" and "tuned"), with the
    values it reads only (so that it equals the same rule in the tuning grid)."""
    te, rule = config.test, config.adapt_rule
    if rule == "gradient":
        return Rule(rule, steps=te.adapt_steps, alpha=config.test_alpha)
    return Rule(rule, ridge=te.ridge) if rule == "ridge" else Rule(rule)


def candidate_rules(config, admits: Sequence[str]) -> tuple[Rule, ...] | None:
    """The tuning grid (None unless test.adapt = "tuned"): the tune_* keys' rules that the
    source admits for the method (`tuned_rules`)."""
    te = config.test
    if te.adapt != "tuned":
        return None
    rules = [r for r in te.tune_rules if r in admits]
    return tuning.grid(rules, steps=te.tune_steps, alphas=te.tune_alphas(config.test_alpha), ridges=te.tune_ridge)


def run_protocol(score, config, *, admits: Sequence[str], n_validation: int | None = None, n_test: int | None = None,
                 on_chunk=None, should_stop=None) -> tuning.Outcome:
    """The test scores of the asked rule, or of the tuned protocol (metarep.engine.tuning.run)."""
    te = config.test
    tasks = {"validation": te.n_validation if n_validation is None else n_validation,
             "test": te.tasks if n_test is None else n_test}
    return tuning.run(score, asked_rule(config), candidates=candidate_rules(config, admits), tasks=tasks,
                      on_chunk=on_chunk, should_stop=should_stop)


def headline_rule(outcome: tuning.Outcome, config) -> Rule:
    """The rule behind the headline score: the chosen one when tuned, else the asked one."""
    return outcome.tuned["chosen"] if outcome.tuned is not None else asked_rule(config)


def test_keys(head: Rule, config) -> dict:
    """The rule keys of the test section, for the rule behind the headline score."""
    gradient = head.adapt == "gradient"
    return {"adapt": head.adapt, "adapt_steps": head.steps if gradient else None,
            "alpha": head.alpha if gradient else config.test_alpha,
            "ridge": head.ridge if head.adapt == "ridge" else None, "m_test": config.test.m_test}


def test_advice(config) -> Advice:
    """Which setting to lower when test-time adaptation runs away (a code: metarep.running.advice words it)."""
    if config.test.adapt == "tuned":
        return Advice(NARROW_TUNING)
    if config.adapt_rule == "gradient":
        return Advice(LOWER_TEST_ALPHA, config.test_alpha)
    return Advice(LOWER_BETA, config.train.beta)


def tuning_candidates(te) -> int:
    """How many rules the tuning grid holds at most (the method may admit fewer)."""
    rules = te.tune_rules or ()
    return 1 + len(te.tune_steps or ()) * len(te.tune_alpha or (0, 0, 0)) * ("gradient" in rules) + \
        len(te.tune_ridge or ()) * ("ridge" in rules) + ("lstsq" in rules) + ("bayes" in rules)


def chunked_scores(problem: Problem, rules, config, which: str, progress: tuning.Progress, score_chunk) -> np.ndarray:
    """Per-task scores (len(rules), n) of the synthetic "test" (test.tasks, stream test_tasks) or
    "validation" tasks (test.validation_tasks, stream validation_tasks) of test.seed, drawn and
    scored TEST_CHUNK at a time by score_chunk(rules, tasks) -> (len(rules), chunk)."""
    te = config.test
    n = te.tasks if which == "test" else te.n_validation
    rng = seeds.rng(te.seed, "test_tasks" if which == "test" else "validation_tasks")
    out = []
    for start in range(0, n, TEST_CHUNK):
        progress.check()
        tasks = families.sample_tasks(problem, min(TEST_CHUNK, n - start), te.m_test, 0, rng)
        out.append(score_chunk(rules, tasks))
        progress.chunk(tasks.n_tasks)
    return np.concatenate(out, axis=1)


def synthetic_problem(config) -> Problem:
    """The ground truth of problem.family (metarep.families) from problem.seed."""
    p = config.problem
    return families.get_family(p.family).make(p, seeds.rng(p.seed, "problem"))


def synthetic_source(config) -> SyntheticSource:
    """The problem from problem.seed, and (for a fixed set) the training tasks from train.seed."""
    t = config.train
    problem = synthetic_problem(config)
    regime = {"inf": "population", "online": "online"}.get(str(t.tasks), "finite")
    tasks = None
    if regime == "finite":
        tasks = families.sample_tasks(problem, t.tasks, t.m_in, t.m_out, seeds.rng(t.seed, "train_tasks"))
    return SyntheticSource(problem, regime, tasks, t.batch_tasks, t.m_in, t.m_out)


def build_source(config) -> TaskSource:
    """The source the config's [data] table names (synthetic unless it names a table)."""
    data = getattr(config, "data", None)
    if data is None or getattr(data, "source", "synthetic") == "synthetic":
        return synthetic_source(config)
    from metarep.data import table_source

    return table_source(config)
