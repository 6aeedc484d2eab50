"""The run's figure: labelled axes, a title that says what ran, step 0 on the step axis, the
Lemma 2 line where the method's declaration says the theory applies, readable log ticks."""

from __future__ import annotations

import io

import numpy as np
import pytest

from metarep.config.schema import validate
from metarep.engine import run
from metarep.linear.theory import lemma2_perp_sq
from metarep.plots import metrics_figure, tick_text

POPULATION = {"problem": {"d": 5, "k": 2, "seed": 0}, "model": {"width": 5},
              "method": {"name": "fo-anil"},
              "train": {"tasks": "inf", "m_in": 10, "m_out": 10, "alpha": 0.5, "beta": 0.5, "steps": 200,
                        "log_every": 10},
              "test": {"tasks": 20}}


def _figure(data: dict, **train):
    data = {**data, "train": {**data["train"], **train}}
    config = validate(data)
    _, state, summary = run(config)
    fig = metrics_figure(state.history, summary, config)
    fig.savefig(io.BytesIO(), format="png")  # lay out and draw the ticks
    return fig, state.history


def _labels(ax) -> list[str]:
    return [line.get_label() for line in ax.get_lines()]


@pytest.fixture(scope="module")
def population():
    return _figure(POPULATION)


def test_axes_are_labelled_and_the_title_says_what_ran(population):
    fig, _ = population
    norms, lam, loss = fig.axes
    assert lam.get_title() == r"$\Lambda_t$ relative error" and lam.get_yscale() == "log"
    assert norms.get_ylabel() and loss.get_ylabel() and norms.get_ylabel() != loss.get_ylabel()
    assert "step" in norms.get_xlabel() and "step" in loss.get_xlabel()
    title = fig.get_suptitle()
    assert title == "fo-anil: d = 5, k = 2, k' = 5, N = inf, m_in = 10"


def test_title_for_finite_and_online_tasks_and_a_fixed_width():
    history = [{"step": 0, "loss": 1.0, "perp_norm": 1.0}]
    summary = {"status": "completed"}
    data = {**POPULATION, "train": {"tasks": 50, "m_in": 7}}
    assert metrics_figure(history, summary, data).get_suptitle() == "fo-anil: d = 5, k = 2, k' = 5, N = 50, m_in = 7"
    data = {**POPULATION, "train": {"tasks": "online", "batch_tasks": 30}}
    assert "N = online (30 per step)" in metrics_figure(history, summary, data).get_suptitle()
    data = {**POPULATION, "method": {"name": "oracle"}, "train": {"tasks": 50}, "test": {"adapt": "default"}}
    fig = metrics_figure(history, {"status": "diverged"}, data)
    assert fig.get_suptitle().startswith("oracle: d = 5, k = 2, k' = 2,") and fig.get_suptitle().endswith(
        "a direct fit (no training steps) (diverged)")


def test_step_zero_is_on_the_step_axis(population):
    fig, history = population
    assert history[0]["step"] == 0
    for ax in fig.axes:
        assert ax.get_xscale() == "symlog" and ax.get_xlim()[0] <= 0
        assert min(line.get_xdata()[0] for line in ax.get_lines()) == 0


def test_the_lemma2_line_on_a_population_run(population):
    fig, history = population
    norms = fig.axes[0]
    lines = {line.get_label(): line for line in norms.get_lines()}
    bound = lines["Lemma 2 bound iterated from $t=0$"]
    steps = np.array([row["step"] for row in history], dtype=float)
    t = POPULATION["train"]
    expected = np.sqrt(lemma2_perp_sq(steps, history[0]["perp_norm"] ** 2, t["alpha"], t["beta"], 1.0, t["m_in"]))
    np.testing.assert_allclose(bound.get_ydata(), expected, rtol=1e-12)
    assert any(label.startswith("Lemma 2:") for label in lines)


@pytest.mark.parametrize("change", [{"train": {"tasks": 40, "steps": 20}},   # finite tasks: no Lemma 2 line
                                    {"method": {"name": "fo-maml"}}])          # a method without the theory
def test_no_lemma2_line_elsewhere(change):
    data = {**POPULATION, **change, "train": {**POPULATION["train"], "steps": 20, **change.get("train", {})}}
    fig, _ = _figure(data)
    assert not any("Lemma 2" in label for label in _labels(fig.axes[0]))


def test_log_ticks_are_readable(population):
    assert [tick_text(v) for v in (0, 0.01, 0.5, 1, 300, 1e5, 1e-6, 2e5)] == \
        ["0", "0.01", "0.5", "1", "300", "$10^{5}$", "$10^{-6}$", "2e+05"]
    fig, _ = population
    for ax in fig.axes:
        low, high = ax.get_ylim()
        shown = [t.get_text() for t in ax.get_yticklabels() if low <= t.get_position()[1] <= high]
        assert shown and all(shown), shown


def test_a_network_run_names_its_layers_and_draws_its_own_metrics():
    pytest.importorskip("torch")
    data = {"problem": {"d": 6, "k": 2, "seed": 0}, "model": {"arch": "mlp", "width": 4},
            "train": {"tasks": 20, "m_in": 5, "m_out": 5, "steps": 6, "log_every": 2}, "test": {"tasks": 10}}
    fig, _ = _figure(data)
    norms, representation, _, right = fig.axes  # right: the R^2 axis twinned with the effective rank
    assert "on mlp (layers = 2, activation = relu)" in fig.get_suptitle()
    assert set(_labels(norms)) == {r"$\|W_1 B_*\|_2$", r"$\|W_1 P_\perp\|_2$",
                                   r"perp_ratio $\|W_1 P_\perp\|_2 / \|W_1 B_*\|_2$"}
    assert not any("B_t" in label for label in _labels(norms))
    assert _labels(representation) == ["effective rank of phi"] and "R^2" in _labels(right)[0]
    assert any("outside span" in label for label in _labels(right))
    assert right.get_ylim() == (-0.02, 1.02)


def test_a_direct_method_draws_its_fit_not_empty_axes():
    data = {**POPULATION, "method": {"name": "moments"}, "train": {"tasks": 60, "m_in": 5, "m_out": 5}}
    fig, history = _figure(data)
    sv, at = fig.axes
    assert "a direct fit (no training steps)" in fig.get_suptitle()
    heights = [bar.get_height() for bar in sv.patches]
    np.testing.assert_allclose(heights, [history[-1][f"sv_{i}"] for i in range(len(heights))])
    assert len(heights) == 5 and all(h > 0 for h in heights)
    assert [t.get_text() for t in at.get_yticklabels()][:2] == [r"$\|B_*^\top B_t\|_2$", r"$\|P_\perp B_t\|_2$"]
    widths = [bar.get_width() for bar in at.patches]
    assert widths[1] == pytest.approx(history[-1]["perp_norm"])
