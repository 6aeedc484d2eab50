"""Figures: the evolution of the tracked norms on log scales (the paper's figure)."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from metarep.store import atomic_write  # noqa: E402

NORMS = (("align_norm", r"$\|B_\star^\top B_t\|_2$"), ("perp_norm", r"$\|P_\perp B_t\|_2$"),
         ("mean_norm", r"$\|B_t w_t - B_\star\mu_\star\|_2$"), ("lambda_rel_err", r"$\Lambda_t$ rel. error"))


def save_figure(fig, path: Path, formats=("png",)) -> None:
    """Save atomically in each format (path's suffix is replaced)."""
    for fmt in formats:
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=130, bbox_inches="tight")
        atomic_write(Path(path).with_suffix(f".{fmt}"), buf.getvalue())
    plt.close(fig)


def _positive(xs, ys):
    pairs = [(x, y) for x, y in zip(xs, ys) if x > 0 and y > 0]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def metrics_figure(history: list[dict], summary: dict, path: Path) -> None:
    """Two panels: the tracked norms and the training loss against the step, log-log."""
    fig, (ax, ax_loss) = plt.subplots(1, 2, figsize=(11, 4))
    steps = [row["step"] for row in history]
    for key, label in NORMS:
        xs, ys = _positive(steps, [row[key] for row in history])
        if xs:
            ax.plot(xs, ys, label=label)
    lam = summary.get("theory", {}).get("lambda_star")
    if lam:
        ax.axhline(max(lam) ** 0.5, ls=":", c="gray", label=r"$\sqrt{\lambda_{\max}(\Lambda_\star)}$")
    ax.set(xlabel="step", title=f"{summary.get('method')} ({summary.get('regime')})")
    ax.legend(fontsize=8)
    xs, ys = _positive(steps, [row["loss"] for row in history])
    ax_loss.plot(xs, ys)
    ax_loss.set(xlabel="step", title="training (outer) loss")
    for axis in (ax, ax_loss):
        if axis.lines and any(len(line.get_xdata()) for line in axis.lines):
            axis.set(xscale="log", yscale="log")
    save_figure(fig, path)
