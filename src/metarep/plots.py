"""Figures: a run's tracked norms and loss (the paper's figure), a sweep's summary, and the
Lemma 2 decay of perp_norm (MATH 5) that both this figure and the reproduction's figure 1 draw.

The figures are built as `matplotlib.figure.Figure` objects without pyplot: building one needs
no display and leaves no global state behind. Such a figure has no display hook in a fresh
Jupyter kernel (IPython registers matplotlib's only once pyplot is imported), so the figures
here are `Figure`, a subclass with `_repr_png_`: IPython shows the PNG of a returned figure,
pyplot imported or not, and once only. `save_figure` writes one (atomically) in each format asked.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.figure
import numpy as np
from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, SymmetricalLogLocator

from metarep.config.schema import Config, validate
from metarep.linear.theory import lemma2_asymptote, lemma2_perp_sq
from metarep.storage.atomic import atomic_write
from metarep.storage.results import PM, curves, grid_keys_of, test_score
from metarep.storage.tables import fmt

NORMS = (("align_norm", r"$\|B_*^\top B_t\|_2$"), ("perp_norm", r"$\|P_\perp B_t\|_2$"),
         ("mean_norm", r"$\|B_t w_t - B_*\mu_*\|_2$"), ("lambda_rel_err", r"$\Lambda_t$ rel. error"))
STEP_LABEL = "outer step t (0, then log scale)"
DPI = 130


class Figure(matplotlib.figure.Figure):
    """A matplotlib Figure that a notebook shows without pyplot (IPython calls _repr_png_)."""

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
        return buf.getvalue()


def save_figure(fig: matplotlib.figure.Figure, path: Path, formats: Sequence[str] = ("png",)) -> None:
    """Save atomically in each format (path's suffix is replaced); a pyplot figure is closed."""
    for ext in formats:
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, dpi=DPI, bbox_inches="tight")
        atomic_write(Path(path).with_suffix(f".{ext}"), buf.getvalue())
    if getattr(fig.canvas, "manager", None) is not None:  # made by pyplot: free it there too
        import matplotlib.pyplot as plt

        plt.close(fig)


# ----------------------------------------------------------------------------- axes


def tick_text(value: float, _pos: Any = None) -> str:
    """A tick label a reader takes in at once: 0.01, 1, 300, then powers of ten as 10^5."""
    if value == 0:
        return "0"
    if 1e-3 <= abs(value) < 1e4:
        return f"{value:g}"
    exponent = np.log10(abs(value))
    if np.isclose(exponent, round(exponent)):
        return rf"$10^{{{int(round(exponent))}}}$" if value > 0 else rf"$-10^{{{int(round(exponent))}}}$"
    return f"{value:.0e}"


def _readable_log(axis: Axis, low: float, high: float) -> None:
    """Major ticks at powers of ten; over two decades or less, 2 and 5 labelled too."""
    axis.set_major_locator(LogLocator(base=10, numticks=12))
    axis.set_major_formatter(FuncFormatter(tick_text))
    if low > 0 and high / low < 10 ** 2.2:
        axis.set_minor_locator(LogLocator(base=10, subs=(2.0, 5.0), numticks=12))
        axis.set_minor_formatter(FuncFormatter(tick_text))
    else:
        axis.set_minor_formatter(NullFormatter())


def step_axis(ax: Axes) -> None:
    """The step axis: linear from 0 to 1 and logarithmic beyond (symlog), so that step 0 shows."""
    ax.set_xscale("symlog", linthresh=1, linscale=0.5)
    ax.set_xlim(left=0)
    ax.xaxis.set_major_locator(SymmetricalLogLocator(base=10, linthresh=1))
    ax.xaxis.set_major_formatter(FuncFormatter(tick_text))
    ax.set_xlabel(STEP_LABEL)


def log_values(ax: Axes) -> None:
    """A log-scale value axis with readable ticks (once the data are drawn)."""
    ax.set_yscale("log")
    low, high = ax.get_ylim()
    _readable_log(ax.yaxis, low, high)


def _positive(xs: Sequence[float], ys: Sequence[float | None]) -> tuple[list[float], list[float]]:
    """The points a log value axis can show (finite and positive)."""
    pairs = [(x, y) for x, y in zip(xs, ys) if y is not None and np.isfinite(y) and y > 0]
    return [p[0] for p in pairs], [p[1] for p in pairs]


# ----------------------------------------------------------------------------- reproduction figures

# One style per curve: colour, line style and marker all differ, so that curves that coincide
# (FO-ANIL and FO-MAML on N tasks, the heads study's perp_norm) stay apart. Markers every tenth
# of the line's length: `markevery=0.1`.
CURVE_STYLES = (("C0", "-", "o"), ("C1", "--", "s"), ("C2", "-.", "^"), ("C3", (0, (1, 1.5)), "D"),
                ("C4", (0, (6, 2, 1, 2, 1, 2)), "v"), ("C5", (0, (3, 1)), "P"), ("C6", (0, (8, 2)), "X"),
                ("C7", (0, (2, 1, 2, 4)), "*"), ("C8", (0, (4, 1, 1, 1)), "h"), ("C9", (0, (1, 3)), "<"))
QUICK_MARK = "--quick: fewer steps and tasks, not the reproduction's setting"


def curve_style(i: int) -> dict[str, Any]:
    """Keyword arguments of Axes.plot for the i-th curve of a figure (CURVE_STYLES)."""
    color, ls, marker = CURVE_STYLES[i % len(CURVE_STYLES)]
    return {"color": color, "ls": ls, "lw": 1.6, "marker": marker, "markersize": 5, "markevery": 0.1,
            "fillstyle": "none"}


def setting_title(title: str, setting: str, quick: bool) -> str:
    """A reproduction figure's title: what it shows, its setting, and the --quick mark."""
    return "\n".join([f"{title}: {setting}" if setting else title, *([QUICK_MARK] if quick else [])])


def config_setting(config: Config | Mapping[str, Any], *keys: str) -> str:
    """"d = 20, k = 3, k' = 20, sigma = 1, alpha = 0.1, beta = 0.4" (and the listed train keys)."""
    c = _as_config(config)
    p, t = c.problem, c.train
    width = c.method_spec.width(p.d, p.k, c.model.width)
    parts = [f"d = {p.d}, k = {p.k}, k' = {width}, sigma = {p.noise_std:g}, alpha = {t.alpha:g}, beta = {t.beta:g}"]
    return ", ".join(parts + [f"{key} = {getattr(t, key)}" for key in keys])


# ----------------------------------------------------------------------------- theory lines


def draw_lemma2(ax: Axes, steps: Sequence[float], perp0: float, *, alpha: float, beta: float,
                noise_std: float, m_in: Any) -> None:
    """The Lemma 2 decay of ||P_perp B_t||_2 (MATH 5) at `steps`: the bound iterated from
    `perp0` at t = 0 (theory.lemma2_perp_sq) and its asymptote sqrt(m_in / (alpha^2 beta sigma^2
    t)) (theory.lemma2_asymptote), the latter only where it is below 1.5 perp0 (it is infinite
    at t = 0). Nothing is drawn for m_in = inf, where the lemma predicts no decay."""
    t = np.asarray(steps, dtype=np.float64)
    if not np.isfinite(float(m_in)):
        return
    bound = np.sqrt(lemma2_perp_sq(t, perp0 ** 2, alpha, beta, noise_std, m_in))
    with np.errstate(divide="ignore"):
        asymptote = np.sqrt(lemma2_asymptote(t, alpha, beta, noise_std, m_in))
    keep = (t > 0) & (asymptote <= 1.5 * perp0)
    ax.plot(t[keep], asymptote[keep], ls="--", color="k", lw=1,
            label=r"Lemma 2: $\sqrt{m_{in}/(\alpha^2\beta\sigma^2 t)}$")
    ax.plot(t, bound, ls=":", color="k", lw=1, label="Lemma 2 bound iterated from $t=0$")


# ----------------------------------------------------------------------------- a run


def _as_config(config: Config | Mapping[str, Any]) -> Config:
    return config if isinstance(config, Config) else validate(dict(config))


def run_title(config: Config | Mapping[str, Any], summary: Mapping[str, Any] | None = None, *,
              direct: bool = False) -> str:
    """"fo-anil: d = 20, k = 3, k' = 20, N = inf, m_in = 10" (and the status unless completed);
    a network other than the linear one is named with its [model] options; `direct` says that
    the method fits without training steps."""
    c = _as_config(config)
    p, t = c.problem, c.train
    if c.data.source != "synthetic":
        return _table_title(c, summary, direct)
    width = c.method_spec.width(p.d, p.k, c.model.width)
    tasks = f"online ({t.batch_tasks} per step)" if t.tasks == "online" else t.tasks
    title = f"{c.method.name}{_arch_text(c)}: d = {p.d}, k = {p.k}, k' = {width}, N = {tasks}, m_in = {t.m_in}"
    title += DIRECT if direct else ""
    status = (summary or {}).get("status")
    if status and status != "completed":
        title += f" ({status})"
    return title


def _arch_text(c: Config) -> str:
    """" on mlp (layers = 2, activation = relu)": the network, unless it is the paper's linear one."""
    if c.model.arch == "linear":
        return ""
    options = {k: v for k, v in c.model.options.model_dump().items() if v is not None and v is not False
               and k != "dtype"}
    return f" on {c.model.arch}" + (f" ({', '.join(f'{k} = {v}' for k, v in options.items())})" if options else "")


DIRECT = ", a direct fit (no training steps)"


def _table_title(c: Config, summary: Mapping[str, Any] | None, direct: bool) -> str:
    """"fo-anil on exam: d = 11, k' = 5, 50 training tasks, m_in = 10" (what the data gave, where known)."""
    data = ((summary or {}).get("test") or {}).get("data") or {}
    d = data.get("d", "?")
    width = c.method_spec.width(d, 0, c.model.width) if isinstance(d, int) else c.model.width
    title = (f"{c.method.name} on {c.data.dataset or c.data.path}: d = {d}, k' = {width}, "
             f"{data.get('train_tasks', '?')} training tasks, m_in = {c.train.m_in}") + (DIRECT if direct else "")
    status = (summary or {}).get("status")
    return title + (f" ({status})" if status and status != "completed" else "")


def _theory_lines(ax: Axes, c: Config, history: list[dict], summary: Mapping[str, Any]) -> None:
    """What the paper predicts for a method whose declaration says its theory applies: the level
    sqrt(lambda_max(Lambda*)) of align_norm and, with infinite tasks, the Lemma 2 decay."""
    if not c.method_spec.theory:
        return
    lam = (summary.get("theory") or {}).get("lambda_star")
    if lam:
        ax.axhline(max(lam) ** 0.5, ls=":", c="gray", label=r"$\sqrt{\lambda_{\max}(\Lambda_*)}$")
    t = c.train
    if t.tasks == "inf" and history and history[0]["step"] == 0 and history[0].get("perp_norm"):
        m_in = float("inf") if t.m_in == "inf" else t.m_in
        draw_lemma2(ax, [row["step"] for row in history], history[0]["perp_norm"], alpha=t.alpha, beta=t.beta,
                    noise_std=c.problem.noise_std, m_in=m_in)


def _draw(ax: Axes, steps: list[int], values: Sequence[float | None], **style: Any) -> bool:
    """Plot the positive values (a log axis shows no others); False when there is none."""
    xs, ys = _positive(steps, values)
    if xs:
        ax.plot(xs, ys, marker="o" if len(xs) == 1 else None, **style)
    return bool(xs)


def norm_labels(c: Config) -> dict[str, str]:
    """Axis labels of the tracked norms in the parameters' own names: B_t for the linear
    network; the first layer W_1 (playing B^T, nonlinear/metrics) for the others."""
    if c.model.arch == "linear":
        return dict(NORMS)
    return {"align_norm": r"$\|W_1 B_*\|_2$", "perp_norm": r"$\|W_1 P_\perp\|_2$",
            "perp_ratio": r"perp_ratio $\|W_1 P_\perp\|_2 / \|W_1 B_*\|_2$",
            "mean_norm": "mean_norm", "lambda_rel_err": "lambda_rel_err"}


def _norms_panel(ax: Axes, c: Config, history: list[dict], summary: Mapping[str, Any]) -> None:
    """The tracked norms of the history, and the theory's lines where they apply."""
    steps = [row["step"] for row in history]
    labels = norm_labels(c)
    never = [key for key in ("align_norm", "perp_norm", "perp_ratio", "mean_norm") if history and key in history[0]
             and not _draw(ax, steps, [row[key] for row in history], label=labels[key])]
    _theory_lines(ax, c, history, summary)
    # a metric with no positive value (mean_norm when mu* = 0 and w_0 = 0) cannot be drawn on a log axis
    ax.set(ylabel="norm", title="the representation against $B_*$"
           + (f"\n({', '.join(never)}: no positive value, not drawn)" if never else ""))


def _lambda_panel(ax: Axes, history: list[dict]) -> None:
    """The relative error of Lambda_t = B_t^T B_t... (MATH 4) on its own axis: it falls by
    orders of magnitude more than the norms, which would be squeezed on a shared one."""
    _draw(ax, [row["step"] for row in history], [row["lambda_rel_err"] for row in history], c="C2")
    ax.set(ylabel=r"$\|\Lambda_t - \Lambda_*\|_F / \|\Lambda_*\|_F$", title=r"$\Lambda_t$ relative error")


def _representation_panel(ax: Axes, history: list[dict]) -> None:
    """A network's representation phi on the probe inputs: its effective rank (left axis, 1 to
    the width); on the right axis (0 to 1) the R^2 of the teacher's features phi*(x) from phi(x),
    and where tracked the share of the input gradient's energy outside span(B*) or of phi's energy
    outside the family's true span (nonlinear/metrics)."""
    steps = [row["step"] for row in history]
    ax.plot(steps, [row["effective_rank"] for row in history], c="C4", label="effective rank of phi")
    ax.set(ylabel="effective rank of phi (entropy)", title="the representation phi(x)")
    right = ax.twinx()
    right.plot(steps, [row["r2"] for row in history], c="C1", ls="--",
               label=r"$R^2$ of the teacher's features $\phi_*(x)$ from phi(x)")
    if "span_outside" in history[0]:  # a family with a known span (metarep.families): the energy outside it
        right.plot(steps, [row["span_outside"] for row in history], c="C2", ls=":",
                   label="share of phi's energy outside the true span")
    if "grad_perp_share" in history[0]:  # the function's input gradient outside span(B*), scale-free
        right.plot(steps, [row["grad_perp_share"] for row in history], c="C3", ls="-.",
                   label=r"share of $E\|\nabla_x f\|^2$ outside span($B_*$)")
    right.set_ylim(-0.02, 1.02)
    right.set_ylabel(r"$R^2$, share (0 to 1)")
    lines = [*ax.get_lines(), *right.get_lines()]
    ax.legend(lines, [str(line.get_label()) for line in lines], fontsize=8, loc="center right")


def _singular_values_panel(ax: Axes, history: list[dict]) -> None:
    steps = [row["step"] for row in history]
    for key in [k for k in (history[0] if history else {}) if k.startswith("sv_")]:
        _draw(ax, steps, [row[key] for row in history], c="C0", lw=1)
    ax.set(ylabel="singular values of B", title="singular values of B (no B* to compare with)")


def _steps_figure(history: list[dict], summary: Mapping[str, Any], c: Config) -> Figure:
    """An iterative method: the representation against B* (or B's singular values without a
    ground truth), Lambda_t's error or the network's representation metrics where tracked, and
    the training loss, each against the step."""
    columns = history[0] if history else {}
    extra = _lambda_panel if "lambda_rel_err" in columns else \
        _representation_panel if "effective_rank" in columns else None
    fig = Figure(figsize=(15 if extra else 11, 4.6), layout="constrained")
    axes = list(fig.subplots(1, 3 if extra else 2))
    ax, ax_loss = axes[0], axes[-1]
    _norms_panel(ax, c, history, summary)
    if not ax.lines:  # no ground truth (real data): the singular values of B instead
        _singular_values_panel(ax, history)
    if extra is not None:
        extra(axes[1], history)
    _draw(ax_loss, [row["step"] for row in history], [row.get("loss") for row in history])
    ax_loss.set(ylabel="training (outer) loss", title="training loss")
    for i, axis in enumerate(axes):
        step_axis(axis)
        if axis.lines and not (i == 1 and extra is _representation_panel):  # rank and R^2: linear axes
            log_values(axis)
    if any(not line.get_label().startswith("_") for line in ax.lines):
        ax.legend(fontsize=8)
    return fig


def _direct_figure(history: list[dict], c: Config) -> Figure:
    """A direct method (a fit, no steps): the singular values of the fitted B, and the tracked
    quantities at the fit with their values."""
    row = history[-1] if history else {}
    fig = Figure(figsize=(11, 4.4), layout="constrained")
    ax_sv, ax_at = fig.subplots(1, 2)
    sv = [row[k] for k in row if k.startswith("sv_")]
    ax_sv.bar(range(1, len(sv) + 1), sv, color="C0")
    ax_sv.set(xlabel="index i", ylabel=r"$\sigma_i(B)$", title="singular values of the fitted B")
    if len(sv) <= 20:
        ax_sv.set_xticks(range(1, len(sv) + 1))
    labels = norm_labels(c)
    keys = [k for k in ("align_norm", "perp_norm", "mean_norm", "lambda_rel_err") if k in row]
    values = [row[k] for k in keys]
    bars = ax_at.barh(range(len(keys)), values, color=[f"C{i}" for i in range(len(keys))])
    ax_at.bar_label(bars, [f"{v:.3g}" for v in values], padding=3)
    ax_at.set_yticks(range(len(keys)), [labels.get(k, k) for k in keys])
    ax_at.invert_yaxis()
    ax_at.set_xlim(0, 1.25 * max([v for v in values if np.isfinite(v)] or [1.0]))
    ax_at.set(xlabel="value at the fit", title="against $B_*$" if keys else "no ground truth to compare with")
    return fig


def metrics_figure(history: list[dict], summary: Mapping[str, Any], config: Config | Mapping[str, Any]) -> Figure:
    """The run's figure. An iterative method: the tracked norms (and, where the method's
    declaration says the theory applies, the predicted level and the Lemma 2 decay), Lambda_t's
    error or a network's representation metrics, and the training loss against the step. A
    direct method (no steps): the singular values of its fit and the tracked values at it.

    `history` is the metric history (metrics.csv rows), `summary` the content of summary.json,
    `config` the resolved config (a Config or its nested dict). Values axes are logarithmic;
    the step axis shows step 0 (symlog). Metrics absent from the history are left out.
    """
    c = _as_config(config)
    direct = bool(history) and max(row["step"] for row in history) == 0 and not c.method_spec.iterative
    fig = _direct_figure(history, c) if direct else _steps_figure(history, summary, c)
    fig.suptitle(run_title(c, summary, direct=direct))
    return fig


# ----------------------------------------------------------------------------- a sweep


def summary_figure(columns: list[str], rows: list[dict]) -> Figure | None:
    """Test excess risk and final perp_norm (mean +- sd over seeds) against the first grid key,
    one line per combination of the other keys; None without a grid or a completed run."""
    keys = grid_keys_of(columns)
    score = test_score(rows)
    if not keys or not any(r["status"] == "completed" and r.get(score) is not None for r in rows):
        return None
    replicated = len({r.get("seed") for r in rows if r["status"] == "completed"}) > 1
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    panels = (("excess_risk", "test excess risk"), ("perp_norm", r"final $\|P_\perp B\|_2$")) \
        if score == "excess_risk" else (("mse", "test MSE (held-out tasks)"), ("rank", "final rank of B"))
    for ax, (metric, title) in zip(fig.subplots(1, 2), panels):
        x_key, xs, lines = curves(columns, rows, metric)
        position = {x: i for i, x in enumerate(xs)}
        for i, line in enumerate(lines):
            shift = (i - (len(lines) - 1) / 2) * min(0.08, 0.4 / len(lines))  # keep error bars apart
            ax.errorbar([position[x] + shift for x in line.xs], line.means, yerr=line.sds, marker="o", capsize=3,
                        label=line.label or None)
        ax.set_xticks(range(len(xs)), [fmt(x) for x in xs])
        ax.set(xlabel=x_key, ylabel=title, title=title + (f", mean {PM} sd over seeds" if replicated else ""))
        if metric == score and len(keys) > 1:
            ax.legend(fontsize=7)
    return fig
