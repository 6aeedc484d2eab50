"""Run one experiment into a run directory: validate, allocate, train with checkpoints, store."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from metarep import store
from metarep.config import ConfigError, load
from metarep.resources import check_memory
from metarep.runner import build, evaluate, initial_state, summary, train


@dataclass(frozen=True)
class RunResult:
    status: str
    run_dir: Path
    summary: dict | None
    message: str


def _progress_bar(enabled: bool, total: int, initial: int):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled or None, unit="step", leave=False,
                dynamic_ncols=True)


def execute_run(config_path: Path | None, overrides: list[str], out: Path | None, *, resume: Path | None = None,
                force: bool = False, progress: bool = False, should_stop: Callable[[], bool] = lambda: False,
                prepare_out: Callable | None = None, figure: bool = True) -> RunResult:
    """Validate everything first, then create the run directory, train, evaluate and store.

    With `resume`, continue from the directory's checkpoint; the result is bit-identical to a
    run that was never interrupted.
    """
    if resume is not None:
        run_dir = Path(resume)
        if not (run_dir / "config.toml").exists():
            raise ConfigError(f"{str(run_dir)!r} is not a run directory (no config.toml)")
        done = store.read_summary(run_dir)
        if done is not None:
            return RunResult(done["status"], run_dir, done, f"{run_dir}: already {done['status']}, nothing to do")
        config = load(run_dir / "config.toml")
    else:
        config = load(config_path, overrides)
        run_dir = prepare_out(out, Path(config_path), force) if prepare_out else Path(out)
    check_memory(config)
    exp = build(config)
    state = (store.load_checkpoint(run_dir) if resume is not None else None) or initial_state(exp)
    if resume is None:
        run_dir.mkdir(parents=True, exist_ok=True)
        for stale in ("summary.json", store.CHECKPOINT):
            (run_dir / stale).unlink(missing_ok=True)
        store.write_config(run_dir / "config.toml", config.to_dict())
    with _progress_bar(progress, config.train.steps, state.step) as bar:
        state = train(exp, state, on_progress=lambda step: bar.update(1), should_stop=should_stop,
                      on_checkpoint=lambda s: store.save_checkpoint(run_dir, s))
    if state.status == "interrupted":
        store.save_checkpoint(run_dir, state)
        return RunResult("interrupted", run_dir, None, f"interrupted at step {state.step}; continue with "
                                                       f"`metarep run --resume {run_dir}`")
    test = evaluate(exp, state.params) if state.status == "completed" else None
    result = summary(exp, state, test)
    store.write_results(run_dir, exp, state, result, figure=figure)
    return RunResult(state.status, run_dir, result, _describe(run_dir, result))


def _describe(run_dir: Path, s: dict) -> str:
    if s["status"] != "completed":
        return f"{run_dir}: {s['message']}"
    f, t = s["final"], s["test"]
    return (f"{run_dir}: {s['method']} completed {s['steps']} steps; perp_norm {f['perp_norm']:.3g}, "
            f"lambda_rel_err {f['lambda_rel_err']:.3g}, test excess risk {t['excess_risk']:.4g} "
            f"+- {t['excess_risk_se']:.2g}")
