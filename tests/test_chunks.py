"""train.chunk_tasks: the same training, with the working memory of one chunk of tasks."""

import numpy as np
import pytest

from metarep.config.schema import validate
from metarep.engine import run
from metarep.families.problem import sample_tasks
from metarep.linear.params import Params
from metarep.methods import get_method
from metarep.methods.base import chunked_gradient


@pytest.mark.parametrize("name", ["fo-anil", "anil", "fo-maml", "maml"])
def test_chunked_gradient_equals_the_full_one(general_problem, rng, name):
    tasks = sample_tasks(general_problem, 23, 4, 3, rng)
    params = Params(rng.standard_normal((7, 6)), rng.standard_normal(6))
    method = get_method(name)
    full, loss = method.gradient(params, tasks, alpha=0.2, inner_steps=2)
    chunked, chunked_loss = chunked_gradient(method, params, tasks, chunk_tasks=5, alpha=0.2, inner_steps=2)
    np.testing.assert_allclose(chunked.B, full.B, rtol=1e-12, atol=1e-12 * np.abs(full.B).max())
    np.testing.assert_allclose(chunked.w, full.w, rtol=1e-12, atol=1e-12 * np.abs(full.w).max())
    assert chunked_loss == pytest.approx(loss, rel=1e-12)


def test_chunked_training_ends_where_unchunked_training_ends():
    base = {"problem": {"d": 6, "k": 2}, "model": {"width": 6},
            "train": {"tasks": 50, "steps": 40, "log_every": 10}, "test": {"tasks": 50}}
    _, whole, _ = run(validate(base))
    _, chunked, _ = run(validate({**base, "train": {**base["train"], "chunk_tasks": 7}}))
    np.testing.assert_allclose(chunked.params.B, whole.params.B, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(chunked.params.w, whole.params.w, rtol=1e-11, atol=1e-13)
