"""Run one experiment into a run directory: validate, allocate, train with checkpoints, store.

The order of events is what makes every fault recoverable:

1. the config is read and validated and its memory need checked: nothing is written before;
2. the run directory is created and locked; a directory reused with --force loses its old
   config.toml first (so it stops being resumable), then its other results;
3. config.toml is written, then a checkpoint of step 0 that records the config's hash;
4. checkpoints follow every train.checkpoint_every steps, every CHECKPOINT_SECONDS of wall
   time, on SIGINT/SIGTERM, and when training completes (before the test evaluation, which a
   signal stops at the next chunk of test tasks: a resume then skips training and evaluates again);
5. results are written with summary.json last, and only then is the checkpoint removed.

A kill at any instant leaves one of: no config.toml (run again), config.toml and maybe a
checkpoint (resume), or summary.json (done). Every write is atomic.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from metarep.config.files import load
from metarep.config.schema import Config, ConfigError
from metarep.engine import build, evaluate_final, run_summary, train
from metarep.running.progress import progress as progress_display
from metarep.running.resources import check_memory
from metarep.storage import store

# A run checkpoints at least this often (wall time), whatever train.checkpoint_every says.
CHECKPOINT_SECONDS = 60.0
# Reading a table that takes longer than this is announced (a first run of a bundled dataset).
SLOW_BUILD_S = 1.0


@dataclass(frozen=True)
class RunResult:
    """history and arrays (params.npz's: the learned arrays, then the ground truth) are those the
    run directory holds, kept in memory by a run that finished here (else empty and None)."""

    status: str
    run_dir: Path
    summary: dict | None
    message: str
    history: tuple[dict, ...] = ()
    arrays: dict | None = None


def execute_run(config_path: Path | None, overrides: list[str], out: Path | None, *, resume: Path | None = None,
                force: bool = False, progress: bool = False, should_stop: Callable[[], bool] = lambda: False,
                prepare_out: Callable | None = None, figure: bool = True,
                checkpoint_seconds: float | None = CHECKPOINT_SECONDS) -> RunResult:
    """Validate everything first, then create the run directory, train, evaluate and store.

    With `resume`, continue from the directory's checkpoint; the result is bit-identical to a
    run that was never interrupted. A checkpoint written for another resolved config is refused.
    """
    if resume is not None:
        return _resume(Path(resume), progress=progress, should_stop=should_stop, figure=figure,
                       checkpoint_seconds=checkpoint_seconds)
    assert config_path is not None
    config = load(config_path, overrides)
    run_dir = prepare_out(out, Path(config_path), force) if prepare_out else Path(out or "runs")
    return execute_config(config, run_dir, progress=progress, should_stop=should_stop, figure=figure,
                          checkpoint_seconds=checkpoint_seconds)


def execute_config(config: Config, run_dir: Path, *, progress: bool = False,
                   should_stop: Callable[[], bool] = lambda: False, figure: bool = True,
                   checkpoint_seconds: float | None = CHECKPOINT_SECONDS) -> RunResult:
    """A validated config into `run_dir` (created, or emptied of an earlier run's files)."""
    check_memory(config)
    exp = _build(config, progress)
    state = exp.initial_state()
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        with store.lock_run_dir(run_dir):
            digest = store.config_hash(config)
            store.clear_run_dir(run_dir)
            store.write_config(run_dir / "config.toml", config.to_dict())
            created = False
            if exp.method.iterative:
                store.save_checkpoint(run_dir, state, config_hash=digest)
            return _train_and_store(exp, state, run_dir, digest, progress=progress, should_stop=should_stop,
                                    figure=figure, checkpoint_seconds=checkpoint_seconds)
    finally:
        if created:  # failed before the run existed: leave no empty directory behind
            _remove_if_empty(run_dir)


def _build(config: Config, progress: bool):
    """build(config), saying for a table what takes time (reading and encoding it, when that
    takes over SLOW_BUILD_S), then what the table gave."""
    data = config.data
    if not (progress and data.source != "synthetic"):
        return build(config)
    what = f"bundled dataset {data.dataset!r}" if data.source == "dataset" else f"{data.path!r}"
    # said only when it takes a while: a table refused at once keeps its error to one line
    slow = threading.Timer(SLOW_BUILD_S, _say, [f"data: reading {what}, encoding its features and splitting "
                                                 "its tasks ..."])
    slow.daemon = True
    slow.start()
    try:
        exp = build(config)
    finally:
        slow.cancel()
    _say(f"data: {data_line(exp.source.description)}")  # type: ignore[attr-defined]  # a table source
    return exp


def data_line(d: dict) -> str:
    """What a table gave, on one line: d, the tasks of each role and what was dropped."""
    return (f"{d['name']}: d = {d['d']}, {d['train_tasks']} training / {d['heldout_tasks']} held-out tasks "
            f"of {d['tasks']} ({d['train_tasks_dropped']} / {d['heldout_tasks_dropped']} dropped as too small), "
            f"{d['rows']} rows ({d['rows_missing_dropped']} dropped for missing values)")


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _remove_if_empty(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.rmdir()


def _resume(run_dir: Path, *, progress, should_stop, figure, checkpoint_seconds) -> RunResult:
    if not (run_dir / "config.toml").is_file():
        raise ConfigError(f"{str(run_dir)!r} is not a run directory (no config.toml): start the run again "
                          f"with `metarep run CONFIG --out {run_dir}`")
    with store.lock_run_dir(run_dir):
        done = store.read_summary(run_dir)
        if done is not None:
            # killed after summary.json, before the checkpoint was removed: finish the cleanup
            (run_dir / store.CHECKPOINT).unlink(missing_ok=True)
            store.remove_temporaries(run_dir)
            return RunResult(done["status"], run_dir, done, f"{run_dir}: already {done['status']}, nothing to do")
        config = load(run_dir / "config.toml")
        digest = store.config_hash(config)
        check_memory(config)
        exp = _build(config, progress)
        fresh = exp.initial_state()
        state = store.load_checkpoint(run_dir, like=fresh, config_hash=digest)  # refuses another config's
        _check_compatible(fresh, state, run_dir, config.train.steps)
        store.remove_temporaries(run_dir)
        if state is None:  # killed before the first checkpoint (or never started): start at step 0
            state = fresh
            if exp.method.iterative:
                store.save_checkpoint(run_dir, state, config_hash=digest)
        return _train_and_store(exp, state, run_dir, digest, progress=progress, should_stop=should_stop,
                                figure=figure, checkpoint_seconds=checkpoint_seconds)


def _check_compatible(fresh, state, run_dir: Path, steps: int) -> None:
    """A checkpoint must hold parameters shaped like the run's own, finite, at a step <= train.steps."""
    if state is None:
        return
    finite = all(np.isfinite(a).all() for a in state.params)
    if state.step > steps or not finite or (state.rng_state is None) != (fresh.rng_state is None):
        raise store.CheckpointError(f"checkpoint in {str(run_dir)!r} does not fit its config.toml (step "
                                    f"{state.step}); delete {store.CHECKPOINT} to restart from step 0")


def _train_and_store(exp, state, run_dir: Path, digest: str, *, progress, should_stop, figure,
                     checkpoint_seconds) -> RunResult:
    config = exp.config

    def checkpoint(s):
        store.save_checkpoint(run_dir, s, config_hash=digest)

    try:
        with progress_display(config.train.steps, state.step, progress) as bar:
            state = train(exp, state, on_progress=lambda step: bar.update(1), should_stop=should_stop,
                          on_checkpoint=checkpoint, checkpoint_seconds=checkpoint_seconds)
    except Exception as err:
        err.add_note(f"run directory: {run_dir} (its last checkpoint stays: `metarep run --resume {run_dir}`)")
        raise
    if state.status == "interrupted":
        checkpoint(state)
        return RunResult("interrupted", run_dir, None, f"interrupted at step {state.step}; continue with "
                                                       f"`metarep run --resume {run_dir}`")
    if state.status == "completed" and exp.method.iterative:
        checkpoint(state)  # the finished training survives an interrupted or killed test evaluation
    try:
        test = _evaluate(exp, state, progress=progress, should_stop=should_stop)
    except KeyboardInterrupt:
        return RunResult("interrupted", run_dir, None,
                         f"interrupted during the test evaluation; training is complete (step {state.step}, "
                         f"checkpointed): `metarep run --resume {run_dir}` re-runs the evaluation only")
    with np.errstate(all="ignore"):
        result = run_summary(exp, state, test)
    store.write_results(run_dir, exp, state, result, figure=figure)
    return RunResult(state.status, run_dir, result, _describe(run_dir, result), tuple(state.history),
                     exp.arrays(state.params))


def _evaluate(exp, state, *, progress: bool, should_stop: Callable[[], bool]) -> dict | None:
    """evaluate_final with a progress display, stopped (KeyboardInterrupt) when should_stop()
    says so: before it starts, and between chunks of test tasks (a signal sets the flag; a
    chunk of sources.TEST_CHUNK tasks takes milliseconds)."""
    if state.status != "completed":
        return evaluate_final(exp, state)
    if should_stop():
        raise KeyboardInterrupt
    table = getattr(getattr(exp, "source", None), "description", None) or {}
    n = table.get("heldout_tasks", exp.config.test.tasks)
    with progress_display(n, 0, progress, unit="task", desc="test") as bar:
        if progress:
            bar.write(f"training complete (step {state.step}): evaluating on {n} {'held-out' if table else 'test'} "
                      "tasks")
        done = [0]

        def on_chunk(count: int, total: int) -> None:
            bar.update(count - done[0])
            done[0] = count

        return evaluate_final(exp, state, on_chunk=on_chunk, should_stop=should_stop)


def _describe(run_dir: Path, s: dict) -> str:
    if s["status"] != "completed":
        return f"{run_dir}: {s['message']}"
    f, t = s["final"], s["test"]
    parts = [f"{key} {f[key]:.3g}" for key in ("perp_norm", "lambda_rel_err", "span_outside") if key in f]  # truth
    label, key = ("test excess risk", "excess_risk") if "excess_risk" in t else ("test MSE", "mse")
    parts.append(f"{label} {t[key]:.4g} +- {t[key + '_se']:.2g}")
    data = t.get("data")
    if data:
        parts.append(f"data {data_line(data)}")
    family = t.get("family")  # a task family's own test (metarep.families): its MSE after 1 and 10 steps per K
    if family and "mse" in family:
        parts.append(f"{family['name']} MSE after 1 / 10 steps: "
                     + ", ".join(f"K = {k} {v['1']:.3g} / {v['10']:.3g}" for k, v in family["mse"].items()))
    return f"{run_dir}: {s['method']} completed {s['steps']} steps; " + ", ".join(parts)
