"""train.tasks_per_step: stochastic outer steps on a subset of the fixed training tasks. Checked
against the full-batch step on the subset the run's stream draws (an independent recomputation),
the per-task heads of multi-task learning, bit-identical resume and what the config refuses."""

from __future__ import annotations

import random

import numpy as np
import pytest

pytest.importorskip("torch")

from metarep import seeds  # noqa: E402
from metarep.config.schema import ConfigError, validate  # noqa: E402
from metarep.engine import build, train  # noqa: E402
from metarep.families.tasks import Tasks  # noqa: E402
from metarep.methods.base import outer_gradient  # noqa: E402
from metarep.running.execute import execute_run  # noqa: E402
from run_helpers import result_files, stop_after


def _cfg(method="fo-anil", per_step=4, steps=3, head_scale=0.0, **train):
    return validate({"problem": {"d": 5, "k": 2, "teacher": "relu"},
                     "model": {"arch": "mlp", "width": 4, "layers": 3, "bias": True,
                               "init_head_scale": head_scale},
                     "method": {"name": method},
                     "train": {"tasks": 10, "m_in": 4, "m_out": 3, "steps": steps, "log_every": 1, "alpha": 0.2,
                               "beta": 0.1, "seed": 3, **({"tasks_per_step": per_step} if per_step else {}), **train},
                     "test": {"m_test": 6, "tasks": 20}})


def _subset(tasks: Tasks, rows) -> Tasks:
    return Tasks(tasks.X_in[rows], tasks.y_in[rows], tasks.X_out[rows], tasks.y_out[rows])


def _one_step(config):
    exp = build(config)
    state = exp.initial_state()
    start = state.params
    state = train(exp, state, points=[0, 1], should_stop=lambda: state.step >= 1)
    return exp, start, state.params


@pytest.mark.parametrize("method", ["fo-anil", "maml"])
def test_a_step_is_the_full_batch_step_on_the_drawn_tasks(method):
    config = _cfg(method)
    exp, start, after = _one_step(config)
    rows = np.sort(seeds.rng(3, "task_batches").choice(10, 4, replace=False))
    tasks = _subset(exp.source.tasks, rows)
    _, grads, _ = outer_gradient(exp.method, start, tasks, net=exp.net, **exp.hyper)
    for a, s, g in zip(after, start, grads):
        np.testing.assert_allclose(a, s - 0.1 * np.asarray(g), rtol=1e-12, atol=1e-14)


def test_all_tasks_per_step_is_the_full_batch_run():
    _, _, full = _one_step(_cfg(per_step=None))
    _, _, every = _one_step(_cfg(per_step=10))
    for a, b in zip(full, every):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)


def test_multitask_moves_only_the_drawn_tasks_heads():
    exp, start, after = _one_step(_cfg("burer-monteiro", head_scale=1.0))
    rows = np.sort(seeds.rng(3, "task_batches").choice(10, 4, replace=False))
    moved = np.flatnonzero(np.abs(after.w - start.w).max(axis=1) > 0)
    np.testing.assert_array_equal(moved, rows)
    assert np.abs(after.W1 - start.W1).max() > 0


def test_resume_is_bit_identical(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[problem]\nd = 5\nk = 2\nteacher = "relu"\n[model]\narch = "mlp"\nwidth = 4\n'
                    '[method]\nname = "fo-anil"\n[train]\ntasks = 12\ntasks_per_step = 5\nm_in = 4\nm_out = 4\n'
                    'alpha = 0.2\nbeta = 0.1\nsteps = 20\nlog_every = 3\ncheckpoint_every = 4\n'
                    '[test]\nm_test = 6\ntasks = 30\n')
    assert execute_run(path, [], tmp_path / "ref", figure=False).status == "completed"
    out = tmp_path / "run"
    result = execute_run(path, [], out, figure=False, should_stop=stop_after(random.Random(5).randint(2, 10)))
    assert result.status == "interrupted"
    assert execute_run(None, [], None, resume=out, figure=False).status == "completed"
    assert result_files(out) == result_files(tmp_path / "ref")


@pytest.mark.parametrize("train,match", [({"tasks": "online"}, "fixed set"), ({"tasks": 3}, "at least as large")])
def test_config_refuses(train, match):
    with pytest.raises(ConfigError, match=match):
        _cfg(**train)


def test_the_linear_model_refuses_it():
    with pytest.raises(ConfigError, match="tasks_per_step.*mlp"):
        validate({"train": {"tasks": 10, "tasks_per_step": 4}})
