"""The command line: `metarep run | sweep | reproduce | report | bench | methods`.

Exit statuses: 0 done; 2 a mistake the user can fix (bad config, unreadable or unwritable file,
too little memory, an unusable output directory: one line on stderr, nothing written before the
config is known to be good); 3 a run that diverged; 1 a bug (any other exception: its traceback,
and the run directory, which stays resumable); 130 interrupted (SIGINT/SIGTERM stop a run at the
next step boundary with a checkpoint; a second signal aborts at once). `--debug` or
METAREP_DEBUG=1 prints the traceback of user errors too.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
from contextlib import contextmanager
from pathlib import Path

import click

from metarep.config.schema import ConfigError


class UserError(click.ClickException):
    exit_code = 2


DIVERGED = 3
DEBUG_ENV = "METAREP_DEBUG"


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, invoke_without_command=True)
@click.version_option(package_name="metarep")
@click.option("--debug", is_flag=True, help="Print the traceback of user errors too (or METAREP_DEBUG=1).")
@click.pass_context
def cli(ctx, debug):
    """Study how gradient-based meta-learning learns shared representations."""
    if debug:
        os.environ[DEBUG_ENV] = "1"
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


@contextmanager
def stop_on_signals():
    """Turn the first SIGINT/SIGTERM into a flag the training loop polls (it then checkpoints)."""
    received: list[int] = []

    def handler(signum, frame):
        if received:
            raise KeyboardInterrupt
        received.append(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _prepare_out(out: Path | None, config_path: Path, force: bool) -> Path:
    from metarep.storage.store import only_temporaries

    out = out or Path("runs") / config_path.stem
    if out.exists() and not out.is_dir():
        raise UserError(f"output directory {str(out)!r} exists and is not a directory: choose another --out")
    if out.exists() and not only_temporaries(out) and not force:
        if (out / "summary.json").exists():
            raise UserError(f"output directory {str(out)!r} holds a completed run (summary.json): choose another "
                            "--out, or add --force to overwrite it")
        raise UserError(f"output directory {str(out)!r} is not empty: choose another --out, add --force "
                        f"to overwrite, or continue it with `metarep run --resume {out}`")
    return out


@cli.command()
@click.argument("config_path", metavar="CONFIG", required=False, type=click.Path(path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE", help="Override a config value.")
@click.option("--out", type=click.Path(path_type=Path), help="Run directory (default runs/<config name>).")
@click.option("--resume", type=click.Path(path_type=Path), help="Continue the interrupted run in this directory.")
@click.option("--force", is_flag=True, help="Overwrite a non-empty output directory.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def run(config_path, overrides, out, resume, force, quiet):
    """Train and evaluate one experiment described by CONFIG (TOML)."""
    from metarep.running.execute import execute_run

    if (config_path is None) == (resume is None):
        raise UserError("give either CONFIG or --resume DIR")
    if resume is not None and (overrides or out):
        raise UserError("--resume continues a run as it was configured: drop --set and --out")
    with stop_on_signals() as received:
        result = execute_run(config_path, list(overrides), out, resume=resume, force=force,
                             progress=not quiet, should_stop=lambda: bool(received), prepare_out=_prepare_out)
    click.echo(result.message, err=result.status != "completed")
    if result.status == "interrupted":
        sys.exit(130)
    if result.status == "diverged":
        sys.exit(DIVERGED)


@cli.command("methods")
@click.option("--arch", default=None, help="Only the methods of this model.arch.")
def list_methods(arch):
    """The registered methods and what each can do."""
    from metarep.methods import registered
    from metarep.models import get_arch

    if arch is not None:
        try:
            get_arch(arch)
        except ValueError as err:
            raise UserError(f"--arch: {err}") from None
    for m in registered(arch):
        caps = ", ".join(k for k in ("iterative", "infinite_tasks", "online_tasks", "per_task_state") if
                         m.capabilities()[k])
        hyper = ", ".join([*m.train_keys, *m.Hyper.model_fields]) or "-"
        click.echo(f"{m.name:16} [{m.arch}] {m.summary}\n{'':16} can: {caps or '-'}; hyper-parameters: {hyper}; "
                   f"test-time default: {m.default_adapt}")


def _register_optional_commands() -> None:
    """Commands that live in the outer modules (sweep, reproduce, report, bench)."""
    import importlib

    for module, name in (("metarep.cli.sweep", "sweep"), ("metarep.reproduce.cli", "reproduce"),
                         ("metarep.report", "report"), ("metarep.bench.cli", "bench")):
        try:
            cli.add_command(getattr(importlib.import_module(module), name))
        except ModuleNotFoundError as err:
            if not (err.name or "").startswith(module.rsplit(".", 1)[0]):
                raise


def _one_line(text) -> str:
    """`text` on one printable line: control characters and unencodable ones escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def _error(message) -> int:
    if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
        traceback.print_exc()
    click.echo(f"error: {_one_line(message)}", err=True)
    return 2


def _os_error(err: OSError) -> str:
    where = f" {str(err.filename)!r}" if err.filename else ""
    return f"{err.strerror or err}:{where}" if where else f"{err.strerror or err}"


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, turning user errors into one line and exit status 2."""
    try:
        _register_optional_commands()
        cli.main(args=argv, standalone_mode=False, prog_name="metarep")
    except ConfigError as err:
        return _error(err)
    except click.exceptions.Exit as err:
        return err.exit_code
    except (click.Abort, KeyboardInterrupt):
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as err:
        return _error(err.format_message())
    except MemoryError:
        return _error("out of memory: lower the sizes in the config (problem.d, train.tasks, test.tasks, ...)")
    except OSError as err:
        return _error(_os_error(err))
    except SystemExit as err:
        return err.code if isinstance(err.code, int) else 1
    except Exception:
        traceback.print_exc()
        click.echo("metarep: this is a bug, not a mistake in the input: please report the traceback above",
                   err=True)
        return 1
    return 0
