"""Reproduction figures a reader can read: curves that coincide stay apart (their own line
style and marker), and the figure says its setting and whether it is a --quick run."""

from __future__ import annotations

import numpy as np

from metarep.reproduce import figure1


def _curve(key, label, scale):
    steps = [0, 1, 2, 5, 10, 20, 50, 100]
    history = [{"step": s, "align_norm": 1 + scale * np.log1p(s), "perp_norm": 2.0 / (1 + s) ** 0.3,
                "mean_norm": 0.1 * scale} for s in steps]
    return {"key": key, "label": label, "history": history, "status": "completed", "theory": False,
            "regime": "finite", "alpha": 0.1, "beta": 0.1, "m_in": 10.0, "noise_std": 1.0}


def test_figure1_curves_have_distinct_styles_and_the_setting_is_shown(tmp_path, monkeypatch):
    drawn = {}
    monkeypatch.setattr("metarep.plots.save_figure", lambda fig, path, formats: drawn.setdefault("fig", fig))
    curves = [_curve("fo_anil", "FO-ANIL, N tasks", 1.0), _curve("fo_maml", "FO-MAML, N tasks", 1.0),
              _curve("bm", "Burer-Monteiro, N tasks", 0.5)]
    setting = figure1.setting_line({"problem": {"d": 8, "k": 2}, "model": {"width": 8},
                                    "train": {"alpha": 0.1, "beta": 0.2}}, 0, True)
    assert setting.startswith("d = 8, k = 2, k' = 8, sigma = 1, alpha = 0.1, beta = 0.2, seed 0")
    assert "--quick" in setting and "--quick" not in figure1.setting_line({}, 0, False)
    figure1.draw(curves, tmp_path / "f.png", setting)
    fig = drawn["fig"]
    assert setting in fig.get_suptitle()
    for ax in fig.axes:
        styles = [(line.get_linestyle(), line.get_marker()) for line in ax.get_lines()]
        assert len(set(styles)) == len(styles) == 3  # FO-ANIL and FO-MAML coincide here: told apart by style
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [c["label"] for c in curves]


def test_adapt_marks_off_scale_means_in_a_band_above_the_axis_with_their_values():
    from matplotlib.figure import Figure

    from metarep.reproduce.studies import adapt

    ax, ax2 = Figure().subplots(1, 2)
    rows = [{"rule": "gradient", "param": p, "excess_risk_mean": y, "excess_risk_std": 0.1}
            for p, y in ((0, 5.0), (1, 2.0), (5, 8.6e31), (50, float("nan")))]
    assert adapt._draw_model(ax, ax2, rows, "FO-ANIL", "C0", 50.0, 0, 2) == 2
    marked = [line for line in ax.get_lines() if line.get_marker() == "^"]
    assert len(marked) == 2 and all(50.0 < line.get_ydata()[0] < 50.0 * adapt.OFF_SCALE for line in marked)
    assert [t.get_text() for t in ax.texts] == ["8.6e+31", "not finite"]


def test_tasks_axis_is_labelled_at_the_values_of_n_only():
    import io

    from matplotlib.figure import Figure

    from metarep.reproduce.studies import tasks_plot

    fig = Figure()
    ax = fig.subplots()
    ax.errorbar([30, 40, 100, 300], [3.0, 2.8, 2.4, 1.7], yerr=0.1)
    ax.set(xscale="log", yscale="log")
    tasks_plot._readable(ax, [30, 40, 100, 300])
    fig.savefig(io.BytesIO(), format="png")
    labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert labels == ["30", "40", "100", "300"]
    assert not [t.get_text() for t in ax.get_xticklabels(minor=True) if t.get_text()]


def test_curve_styles_tell_ten_curves_apart():
    from metarep.plots import curve_style

    styles = [curve_style(i) for i in range(10)]
    for key in ("color", "ls", "marker"):
        assert len({str(s[key]) for s in styles}) == 10, key
