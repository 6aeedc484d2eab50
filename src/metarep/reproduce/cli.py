"""`metarep reproduce ...`: the paper's table and figure, and the studies it leaves open."""

from __future__ import annotations

import importlib
import shlex
import sys
from pathlib import Path

import click

WORKERS = click.option("--workers", "-w", type=click.IntRange(min=1), default=2, show_default=True,
                       help="Worker processes (each uses its share of the cores).")
QUICK = click.option("--quick", is_flag=True, help="Small sizes and few steps (about a minute or less), for CI.")


def _out(name: str):
    return click.option("--out", type=click.Path(path_type=Path), default=Path("results") / name,
                        show_default=True, help="Output folder (created; its files of the same names are replaced).")


def _command_line() -> str:
    return "metarep " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["reproduce"] else ""


@click.group()
@click.option("--experiments", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Folder of experiment files (default: the repository's experiments/).")
@click.pass_context
def reproduce(ctx, experiments):
    """Reproduce the paper's Table 1 and Figure 1, and run the studies it leaves open.

    Every command writes <name>.md, <name>.csv and (except table1) <name>.png into --out;
    `metarep report DIR` collects them into one page.
    """
    ctx.obj = {"experiments": experiments}


@reproduce.command()
@click.option("--seeds", type=click.IntRange(min=1), default=None,
              help="Seeds 0..S-1 per row  [default: 5; 2 with --quick].")
@QUICK
@WORKERS
@_out("table1")
@click.option("--rows", default="", help="Comma-separated row names to run (default: all).")
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="Equal training: every iterative row trains this many outer steps  [default: each row's own].")
@click.pass_obj
def table1(obj, seeds, quick, workers, out, rows, steps):
    """Test excess risk of every method in the paper's setting (MATH.md 7)."""
    from metarep.reproduce.table1 import table1 as run_table

    seeds = seeds or (2 if quick else 5)
    only = tuple(r.strip() for r in rows.split(",") if r.strip())
    run_table(out, seeds=seeds, quick=quick, workers=workers, experiments=obj["experiments"], only=only,
              echo=click.echo, command=_command_line(), steps=steps)


@reproduce.command()
@QUICK
@WORKERS
@_out("figure1")
@click.pass_obj
def figure1(obj, quick, workers, out):
    """Evolution of align_norm, perp_norm, mean_norm for five methods, with the theory (PNG, SVG, CSV)."""
    from metarep.reproduce.figure1 import figure1 as run_figure

    run_figure(out, quick=quick, workers=workers, experiments=obj["experiments"], echo=click.echo)


# The studies and further reproductions: (command, module, help). A module provides
# run(out, *, quick, workers, experiments, echo); adding one is one line here.
STUDIES = (
    ("tasks", "metarep.reproduce.studies.tasks",
     "FO-ANIL with N training tasks against infinite tasks, trained until perp_norm settles."),
    ("adapt", "metarep.reproduce.studies.adapt",
     "Excess risk against test-time gradient steps, and ridge / least squares on the learned features."),
    ("heads", "metarep.reproduce.studies.heads",
     "Non-zero head mean and non-diagonal Sigma*: do the tracked limits still hold?"),
    ("rates", "metarep.reproduce.studies.rates",
     "Unlearning rate of perp_norm^2 against alpha, beta, m_in, next to Lemma 2."),
    ("nonlinear", "metarep.reproduce.nonlinear",
     "The methods on two- and three-layer networks, linear and relu teachers."),
    ("realdata", "metarep.reproduce.realdata", "Held-out schools of real data: test MSE against m_test, every method."),
    ("sinusoid", "metarep.reproduce.sinusoid",
     "MAML's sinusoid regression: every method at K = 5, 10, 20 and three noise levels, unlearning of the span."),
)


def study_module(name: str):
    return importlib.import_module(next(module for n, module, _ in STUDIES if n == name))


def _study(name: str, doc: str):
    @reproduce.command(name=name, help=doc)
    @QUICK
    @WORKERS
    @_out(name)
    @click.pass_obj
    def command(obj, quick, workers, out):
        study_module(name).run(out, quick=quick, workers=workers, experiments=obj["experiments"], echo=click.echo)

    return command


for _name, _, _doc in STUDIES:
    _study(_name, _doc)


@reproduce.command(name="all")
@click.option("--seeds", type=click.IntRange(min=1), default=None, help="Seeds for table1 (default 5; 2 with --quick).")
@QUICK
@WORKERS
@_out("all")
@click.pass_obj
def all_(obj, seeds, quick, workers, out):
    """table1, figure1 and every study below into one folder (for `metarep report`)."""
    from metarep.reproduce.figure1 import figure1 as run_figure
    from metarep.reproduce.table1 import table1 as run_table

    exp = obj["experiments"]
    run_table(out, seeds=seeds or (2 if quick else 5), quick=quick, workers=workers, experiments=exp, echo=click.echo)
    run_figure(out, quick=quick, workers=workers, experiments=exp, echo=click.echo)
    for name, _, _ in STUDIES:
        study_module(name).run(out, quick=quick, workers=workers, experiments=exp, echo=click.echo)
