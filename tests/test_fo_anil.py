import numpy as np
import pytest

from conftest import naive_fo_anil
from metarep.families.problem import sample_tasks
from metarep.linear.params import Params
from metarep.methods.fo_anil import fo_anil_gradient


@pytest.mark.parametrize("inner_steps", [1, 3])
@pytest.mark.parametrize("width", [2, 5, 9])
def test_vectorised_step_equals_per_task_loop(general_problem, rng, inner_steps, width):
    tasks = sample_tasks(general_problem, 13, 4, 5, rng)
    B = rng.standard_normal((general_problem.d, width))
    w = rng.standard_normal(width)
    grads, loss = fo_anil_gradient(Params(B, w), tasks, alpha=0.15, inner_steps=inner_steps)
    gB, gw, ref_loss = naive_fo_anil(B, w, tasks, 0.15, inner_steps)
    np.testing.assert_allclose(grads.B, gB, rtol=1e-12, atol=1e-12 * np.abs(gB).max())
    np.testing.assert_allclose(grads.w, gw, rtol=1e-12, atol=1e-12 * np.abs(gw).max())
    assert loss == pytest.approx(ref_loss, rel=1e-12)


def test_step_depends_on_every_task(general_problem, rng):
    """Guards the check above against a step that ignores part of the batch."""
    tasks = sample_tasks(general_problem, 6, 4, 5, rng)
    B, w = rng.standard_normal((7, 4)), rng.standard_normal(4)
    full, _ = fo_anil_gradient(Params(B, w), tasks, alpha=0.1)
    head, _ = fo_anil_gradient(Params(B, w), tasks.select(slice(0, 5)), alpha=0.1)
    assert np.abs(full.B - head.B).max() > 1e-6
