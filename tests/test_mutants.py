"""Tests written for mutants that outlived the fast test subset (mutmut, [tool.mutmut] in
pyproject.toml): the Lemma 2 envelope, and the loop's divergence paths other than runaway
parameters (a direct fit that is not finite, a loss that is not finite during training or at
the final parameters)."""

from __future__ import annotations

import numpy as np
import pytest

import metarep
from metarep.linear.params import Params
from metarep.linear.theory import lemma2_asymptote, lemma2_perp_sq, lemma2_rate
from metarep.methods import Method, register, unregister


def test_lemma2_envelope_bounds_the_recursion_and_meets_its_asymptote():
    """x_{t+1} = (1 - c x_t) x_t stays below x_0 / (1 + c x_0 t), the solution of x' = -c x^2,
    whose t c x(t) tends to 1 (lemma2_asymptote = 1 / (c t))."""
    alpha, beta, sigma, m = 0.5, 0.3, 1.2, 4
    c = lemma2_rate(alpha, beta, sigma, m)
    assert c == pytest.approx(alpha**2 * beta * sigma**2 / m, rel=1e-15)
    x0, steps = 2.0, np.arange(0, 2000)
    envelope = lemma2_perp_sq(steps, x0, alpha, beta, sigma, m)
    x, path = x0, []
    for _ in steps:
        path.append(x)
        x = (1 - c * x) * x
    assert envelope[0] == x0 and np.all(np.diff(envelope) < 0)
    assert np.all(np.asarray(path) <= envelope * (1 + 1e-12))
    def x_of(t):
        return lemma2_perp_sq(t, x0, alpha, beta, sigma, m)

    h, t = 1e-3, np.array([1.0, 50.0, 700.0])                  # x' = -c x^2 at a few t
    np.testing.assert_allclose((x_of(t + h) - x_of(t - h)) / (2 * h), -c * x_of(t) ** 2, rtol=1e-6)
    far = np.array([1e9])
    np.testing.assert_allclose(x_of(far) / lemma2_asymptote(far, alpha, beta, sigma, m), 1.0, rtol=1e-6)
    assert lemma2_asymptote(np.array([10.0]), alpha, beta, sigma, m)[0] == pytest.approx(1 / (10 * c), rel=1e-15)


CONFIG = {"problem": {"d": 4, "k": 2}, "model": {"width": 3},
          "train": {"tasks": 20, "m_in": 4, "m_out": 4, "steps": 3, "log_every": 1},
          "test": {"tasks": 20, "m_test": 4}}


def _nan_fit(problem, tasks, *, width, rng=None):
    return Params(np.full((tasks.d, width), np.nan), np.zeros(width))


@pytest.fixture
def toy():
    """Registers the Methods a test makes, and removes them afterwards."""
    made = []

    def add(method: Method) -> str:
        register(method)
        made.append(method.name)
        return method.name

    yield add
    for name in made:
        unregister(name)


def test_a_direct_fit_that_is_not_finite_diverges_at_step_0(toy):
    name = toy(Method(name="toy-nan-fit", summary="a fit that returns NaN (a test's method)", adapts="nothing",
                      default_adapt="lstsq", fit=_nan_fit))
    result = metarep.run({**CONFIG, "method": {"name": name}})
    assert result.status == "diverged" and result.summary["diverged_step"] == 0
    message = result.summary["message"]
    assert message.startswith("diverged at step 0: the fitted parameters are not finite; ") and "None" not in message


@pytest.mark.parametrize("nan_at", [1, CONFIG["train"]["steps"]])
def test_a_loss_not_finite_diverges_at_its_step(toy, nan_at):
    """The loss at the parameters after `nan_at` steps is not finite (the last: after training)."""
    calls = []

    def gradient(params, tasks):
        calls.append(1)
        loss = float("nan") if len(calls) > nan_at else 1.0
        return Params(np.zeros_like(params.B), np.zeros_like(params.w)), loss

    name = toy(Method(name="toy-nan-loss", summary="a loss that turns NaN (a test's method)",
                      adapts="nothing", default_adapt="lstsq", gradient=gradient))
    result = metarep.run({**CONFIG, "method": {"name": name}})
    assert result.status == "diverged" and result.summary["diverged_step"] == nan_at
    message = result.summary["message"]
    assert message.startswith(f"diverged at step {nan_at}: the loss became non-finite; ") and "None" not in message
