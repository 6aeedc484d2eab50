"""`metarep bench`: time one outer step of FO-ANIL / exact ANIL against other frameworks."""

from __future__ import annotations

import json
from pathlib import Path

import click

from metarep.bench.config import DTYPES, METHODS, PAPER, BenchConfig
from metarep.bench.contenders import CONTENDERS


def _contender_names(ctx, param, values: tuple[str, ...]) -> tuple[str, ...] | None:
    """--contenders: the names, comma-separated or repeated, each a known contender."""
    names = tuple(n.strip() for v in values for n in v.split(",") if n.strip())
    unknown = [n for n in names if n not in CONTENDERS]
    if unknown:
        raise click.BadParameter(f"unknown contender(s) {', '.join(unknown)}; known: {', '.join(CONTENDERS)}")
    return names or None


@click.command()
@click.option("--method", type=click.Choice([*METHODS, "all"]), default="all", show_default=True,
              help="Which outer step to time.")
@click.option("--n-tasks", type=int, default=PAPER["n_tasks"], show_default=True,
              help="N, tasks per step.")
@click.option("--m-in", type=int, default=PAPER["m_in"], show_default=True,
              help="Inner samples per task.")
@click.option("--m-out", type=int, default=PAPER["m_out"], show_default=True,
              help="Outer samples per task.")
@click.option("--d", "d", type=int, default=PAPER["d"], show_default=True,
              help="Ambient dimension.")
@click.option("--width", type=int, default=PAPER["width"], show_default=True,
              help="k', the width of B.")
@click.option("--dtype", type=click.Choice([*DTYPES, "both"]), default="both", show_default=True)
@click.option("--repeats", type=int, default=None,
              help="Timed runs per vectorised contender [default: 20, --quick 3].")
@click.option("--loop-repeats", type=int, default=None,
              help="Timed runs per loop-over-tasks contender [default: 3, --quick 1].")
@click.option("--contenders", multiple=True, metavar="NAME[,NAME...]", callback=_contender_names,
              help=f"Contenders to run [default: all]; metarep on the active kernel is always run. "
                   f"Known: {', '.join(CONTENDERS)}.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), multiple=True, metavar="FILE",
              help="Also write the report to FILE (.json: the full result as JSON; else Markdown); repeatable.")
@click.option("--quick", is_flag=True,
              help="Few runs, a small bandwidth probe and 10^3 population steps (extrapolated): a smoke test.")
@click.option("--population/--no-population", default=True, show_default=True,
              help="Measure population-step throughput.")
@click.option("--pop-steps", type=int, default=None,
              help="Population steps of one run [default: 100000, --quick 1000].")
@click.option("--pop-batch", type=int, default=None,
              help="Runs batched along a leading axis [default: 256, --quick 16].")
@click.option("--bandwidth/--no-bandwidth", default=True, show_default=True,
              help="Measure the machine's read bandwidth.")
@click.option("--retain-freed-memory", is_flag=True,
              help="Let glibc keep freed memory (metarep.compute.kernels.retain_freed_memory) for the whole process, "
                   "so that no contender page-faults its temporaries afresh every step.")
@click.option("--load", type=int, default=0, show_default=True,
              help="Run N CPU-bound processes beside the contenders while they are timed (a shared machine); "
                   "the targets compare metarep's default with its own one-thread path under that load.")
@click.option("--alpha", type=float, default=0.1, show_default=True, help="Inner step size.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--quiet", is_flag=True, help="No progress lines on stderr.")
@click.option("--arch", type=click.Choice(["linear", "mlp"]), default="linear", show_default=True,
              help="mlp: the relu network's FO-ANIL and ANIL step against per-task higher and torch "
                   "loops (metarep.bench.mlp; uses --layers, --n-tasks, --m-in, --m-out, --d, --width, --alpha, "
                   "--seed, --repeats, --out).")
@click.option("--layers", type=click.IntRange(2, 3), default=2, show_default=True,
              help="--arch mlp: layers of the network (3: hidden = --d units in the first).")
def bench(method, n_tasks, m_in, m_out, d, width, dtype, repeats, loop_repeats, contenders, out, quick,
          population, pop_steps, pop_batch, bandwidth, retain_freed_memory, load, alpha, seed, quiet, arch, layers):
    """Time one outer step of FO-ANIL / exact ANIL: metarep against other implementations.

    Defaults are the paper's setting (N = 5000, m_in = 20, m_out = 10, d = k' = 50). Every
    contender's gradient is checked against metarep's before it is timed. Contenders whose package
    is missing are skipped with a note; nothing is installed. Prints a Markdown report.
    """
    log = (lambda msg: None) if quiet else (lambda msg: click.echo(msg, err=True))
    cfg = BenchConfig(methods=METHODS if method == "all" else (method,), n_tasks=n_tasks, m_in=m_in,
                      m_out=m_out, d=d, width=width, dtypes=DTYPES if dtype == "both" else (dtype,),
                      contenders=contenders, repeats=repeats, loop_repeats=loop_repeats, quick=quick,
                      alpha=alpha, seed=seed, bandwidth=bandwidth, population=population, pop_steps=pop_steps,
                      pop_batch=pop_batch, retain_freed_memory=retain_freed_memory, load=load)
    if arch != "mlp" and layers != 2:
        raise click.UsageError("--layers is an option of --arch mlp (the linear model has two layers)")
    if arch == "mlp":
        from metarep.bench.mlp import mlp_command

        return mlp_command(n_tasks=n_tasks, m_in=m_in, m_out=m_out, d=d, width=width, alpha=alpha, seed=seed,
                           repeats=repeats, quick=quick, out=out, log=log, layers=layers)
    from metarep.bench.harness import run_benchmark
    from metarep.bench.report import format_report, result_to_dict

    result = run_benchmark(cfg, log=log)
    report = format_report(result)
    click.echo(report)
    for path in out:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix.lower() == ".json":
            path.write_text(json.dumps(result_to_dict(result), indent=2, default=_json_default) + "\n")
        else:
            path.write_text(report)
        if not quiet:
            click.echo(f"wrote {path}", err=True)


def _json_default(obj):
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
