"""What a diverged run's message tells the user to lower: the words for the engine's advice
codes (metarep.engine.protocol.Advice). The engine and the experiments return a code and the
setting's value; this module alone words them, for the CLI, summary.json and every table."""

from __future__ import annotations

from metarep.engine.protocol import LOWER_ALPHA, LOWER_BETA, LOWER_TEST_ALPHA, NARROW_TUNING, Advice

WORDS = {
    LOWER_ALPHA: "lower train.alpha (now {value}) or model.init_scale",
    LOWER_BETA: "lower train.beta (now {value})",
    LOWER_TEST_ALPHA: "lower test.alpha (now {value}) or test.adapt_steps",
    NARROW_TUNING: "narrow test.tune_alpha or test.tune_steps (or leave \"gradient\" out of test.tune_rules)",
}


def words(advice: Advice) -> str:
    """The advice as the user reads it, e.g. "lower train.beta (now 0.5)"."""
    return WORDS[advice.code].format(value=advice.value)
