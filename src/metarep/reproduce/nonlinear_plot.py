"""The figure of `metarep reproduce nonlinear`: W1's align and perp norms and the
representation's effective rank over training, one line per (network, m_in)."""

from __future__ import annotations

from pathlib import Path

PANELS = (("align_norm", r"$\|W_1 B_\star\|_2$"), ("perp_norm", r"$\|W_1 (I - B_\star B_\star^\top)\|_2$"),
          ("effective_rank", r"effective rank of $\mathrm{Cov}\,\phi(x)$"))


def plot_curves(path: Path, curves: list[tuple[dict, dict]]) -> None:
    """curves: (job with teacher, activation, m_in; result with its curve rows)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), constrained_layout=True)
    for job, res in curves:
        rows = [r for r in res["curve"] if r.get("perp_norm") is not None]
        steps = [max(r["step"], 1) for r in rows]
        style = "-" if job["activation"] == "relu" else "--"
        label = f"{job['activation']} net, {job['teacher']} teacher, m_in = {job['m_in']}"
        for ax, (key, _) in zip(axes, PANELS):
            ax.plot(steps, [r[key] for r in rows], style, label=label)
    for ax, (key, title) in zip(axes, PANELS):
        ax.set_xscale("log")
        ax.set_xlabel("outer step (step 0 drawn at 1)")
        ax.set_ylabel(title)
        if key != "effective_rank":
            ax.set_yscale("log")
    axes[0].legend(fontsize=7)
    methods = sorted({job["method"] for job, _ in curves})
    fig.suptitle(f"{', '.join(methods)} on the network, fresh tasks every step")
    fig.savefig(path, dpi=110)
    plt.close(fig)
