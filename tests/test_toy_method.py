"""Adding a method is one file: this module registers one and runs it through the API and the CLI.

The toy method is plain gradient descent on the pooled squared loss of the model x^T B w with a
ridge `decay` of its own (a hyper-parameter of its [method] table), no inner loop.
"""

from __future__ import annotations

import json
from typing import Annotated

import numpy as np
import pytest
import tomli_w
from pydantic import BaseModel, ConfigDict, Field

import metarep
from metarep.cli import main
from metarep.linear.params import Params
from metarep.linear.primitives import prediction_gradient
from metarep.methods import Method, register, unregister


class Hyper(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    decay: Annotated[float, Field(ge=0, strict=True)] = 0.0


def pooled_gradient(params: Params, tasks, *, decay: float = 0.0):
    """grad of (1/N) sum_i L_i(B, w) + decay/2 (|B|^2 + |w|^2) on the outer samples: with g_i the
    prediction gradient of task i, grad_B = mean_i g_i w^T + decay B, grad_w = B^T mean_i g_i + decay w."""
    B, w = params
    G, loss = prediction_gradient(tasks.X_out, B @ w, tasks.y_out)
    g = G.mean(axis=0)
    return Params(np.outer(g, w) + decay * B, B.T @ g + decay * w), float(loss.mean())


TOY = Method(name="toy-pooled", summary="gradient descent on the pooled loss (a test's method)",
             adapts="nothing", Hyper=Hyper, default_adapt="lstsq", gradient=pooled_gradient)
CONFIG = {"problem": {"d": 5, "k": 2}, "model": {"width": 5, "init_head_scale": 1.0},
          "method": {"name": "toy-pooled", "decay": 0.01},
          "train": {"tasks": 30, "m_in": 4, "m_out": 4, "steps": 20, "log_every": 5},
          "test": {"tasks": 50, "m_test": 6}}


@pytest.fixture(autouse=True)
def toy_registered():
    register(TOY)
    yield
    unregister("toy-pooled")


def test_the_toy_gradient_is_the_gradient_of_its_objective():
    rng = np.random.default_rng(0)
    problem = metarep.make_problem(5, 2, rng=rng)
    tasks = metarep.sample_tasks(problem, 7, 3, 4, rng)
    params = Params(rng.standard_normal((5, 3)), rng.standard_normal(3))

    def objective(p):
        pred = np.einsum("nmd,d->nm", tasks.X_out, p.B @ p.w)
        return 0.5 * np.mean(np.mean((pred - tasks.y_out) ** 2, axis=1)) + 0.005 * (np.sum(p.B ** 2) + np.sum(p.w ** 2))

    grads, _ = pooled_gradient(params, tasks, decay=0.01)
    eps, E = 1e-6, np.zeros_like(params.B)
    E[2, 1] = eps
    numeric = (objective(Params(params.B + E, params.w)) - objective(Params(params.B - E, params.w))) / (2 * eps)
    assert numeric == pytest.approx(grads.B[2, 1], rel=1e-6)


def test_the_toy_method_runs_through_the_api_and_the_cli(tmp_path):
    result = metarep.run(CONFIG)
    assert result.status == "completed" and result.summary["method"] == "toy-pooled"
    assert result.summary["test"]["adapt"] == "lstsq"
    assert "toy-pooled" in set(metarep.methods()["name"])
    path = tmp_path / "toy.toml"
    path.write_text(tomli_w.dumps(CONFIG))
    assert main(["run", str(path), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    assert json.loads((tmp_path / "run" / "summary.json").read_text()) == result.summary


def test_its_own_hyper_parameters_are_validated_from_its_table():
    with pytest.raises(metarep.ConfigError, match="method.decay"):
        metarep.run({**CONFIG, "method": {"name": "toy-pooled", "decay": -1.0}})
    with pytest.raises(metarep.ConfigError, match="not a key of method 'toy-pooled'"):
        metarep.run({**CONFIG, "method": {"name": "toy-pooled", "lam": 1.0}})
    with pytest.raises(metarep.ConfigError, match="population form"):
        metarep.run({**CONFIG, "train": {**CONFIG["train"], "tasks": "inf"}})
