"""What a diverged run's message tells the user to lower: the words for the engine's advice
codes (metarep.engine.protocol.Advice and its LOWER_* codes). The engine and the experiments
return a code and the setting's value; this module alone words them, for the CLI, summary.json
and every table. It imports nothing from the engine, which asks it for the words."""

from __future__ import annotations

from typing import Any

WORDS = {
    "train.alpha": "lower train.alpha (now {value}) or model.init_scale",
    "train.beta": "lower train.beta (now {value})",
    "test.alpha": "lower test.alpha (now {value}) or test.adapt_steps",
    "test.tune": "narrow test.tune_alpha or test.tune_steps (or leave \"gradient\" out of test.tune_rules)",
}


def words(advice: Any) -> str:
    """An Advice as the user reads it, e.g. "lower train.beta (now 0.5)"."""
    return WORDS[advice.code].format(value=advice.value)
