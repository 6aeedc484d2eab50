"""The engine and the experiments say what to lower as a code and a value (engine.protocol.Advice);
metarep.running.advice alone words it, and the messages users read are those words."""

from __future__ import annotations

import pytest

from metarep.config.schema import validate
from metarep.engine import build, run, sources
from metarep.engine import protocol as p
from metarep.running.advice import WORDS, words

TINY = {"problem": {"d": 5, "k": 2, "seed": 0}, "model": {"width": 4},
        "train": {"tasks": 12, "m_in": 4, "m_out": 4, "steps": 30, "log_every": 5}, "test": {"tasks": 20, "m_test": 4}}


def test_every_code_has_its_words():
    assert set(WORDS) == {p.LOWER_ALPHA, p.LOWER_BETA, p.LOWER_TEST_ALPHA, p.NARROW_TUNING}
    assert words(p.Advice(p.LOWER_BETA, 0.5)) == "lower train.beta (now 0.5)"
    assert words(p.Advice(p.LOWER_ALPHA, 3.0)) == "lower train.alpha (now 3.0) or model.init_scale"
    assert words(p.Advice(p.LOWER_TEST_ALPHA, 0.1)) == "lower test.alpha (now 0.1) or test.adapt_steps"
    assert words(p.Advice(p.NARROW_TUNING)).startswith("narrow test.tune_alpha or test.tune_steps")


@pytest.mark.parametrize("train, code, value", [({"beta": 1000.0}, p.LOWER_BETA, 1000.0),
                                                ({"alpha": 50.0, "beta": 0.01}, p.LOWER_ALPHA, 50.0)])
def test_a_divergence_is_a_code_and_the_message_its_words(train, code, value):
    config = validate({**TINY, "model": {"width": 4, "init_scale": 2.0}, "train": {**TINY["train"], **train}})
    _, state, summary = run(config)
    assert state.status == "diverged"
    advice = build(config).divergence_advice(state)
    assert advice == p.Advice(code, value)
    assert summary["message"].endswith("; " + words(advice))


def test_test_time_advice_is_a_code():
    config = validate({**TINY, "test": {**TINY["test"], "adapt": "gradient", "alpha": 0.3}})
    assert sources.test_advice(config) == p.Advice(p.LOWER_TEST_ALPHA, 0.3)
    assert build(config).test_advice() == p.Advice(p.LOWER_TEST_ALPHA, 0.3)
