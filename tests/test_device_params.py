"""The network's parameters and optimizer state stay tensors where they are trained: they cross
to NumPy only at the start, at a metrics row, at a checkpoint and at the end."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from metarep import engine  # noqa: E402
from metarep.config.schema import validate  # noqa: E402
from metarep.nonlinear import backend  # noqa: E402

STEPS, LOG_EVERY, CHECKPOINT_EVERY = 12, 5, 4


def _config(layers: int, dtype: str, method: str, optimizer: str):
    model = {"arch": "mlp", "width": 4, "layers": layers, "dtype": dtype}
    if layers == 3:
        model["hidden"] = 5
    return validate({"problem": {"d": 5, "k": 2}, "model": model, "method": {"name": method},
                     "train": {"tasks": 10, "m_in": 4, "m_out": 4, "steps": STEPS, "log_every": LOG_EVERY,
                               "checkpoint_every": CHECKPOINT_EVERY, "beta": 0.05, "optimizer": optimizer},
                     "test": {"tasks": 10, "m_test": 4}})


@pytest.fixture
def conversions(monkeypatch):
    """Counts of the conversions between NumPy and torch made by the training path."""
    counts = {"to_device": 0, "to_host": 0, "numpy_to_tensor": 0}
    to_device, to_host, tensor = backend.to_device, backend.to_host, backend.Net.tensor

    def counting_to_device(tree, net):
        counts["to_device"] += 1
        return to_device(tree, net)

    def counting_to_host(tree):
        counts["to_host"] += 1
        return to_host(tree)

    def counting_tensor(self, a):
        counts["numpy_to_tensor"] += isinstance(a, np.ndarray)
        return tensor(self, a)

    monkeypatch.setattr(backend, "to_device", counting_to_device)
    monkeypatch.setattr(backend, "to_host", counting_to_host)
    monkeypatch.setattr(backend.Net, "tensor", counting_tensor)
    return counts


@pytest.mark.parametrize("layers,dtype,method,optimizer", [
    (2, "float64", "fo-anil", "gd"),          # the compiled CPU pass (NumPy views of the tensors)
    (3, "float64", "fo-maml", "adam"),        # torch's gradient
    (2, "float32", "anil", "adam"),
    (2, "float64", "burer-monteiro", "gd"),   # a method with its own step
])
def test_parameters_cross_to_numpy_only_at_rows_checkpoints_and_the_end(conversions, layers, dtype, method,
                                                                        optimizer):
    cfg = _config(layers, dtype, method, optimizer)
    exp = engine.build(cfg)
    state = exp.initial_state()
    checkpoints = []
    fields = len(state.params) + len(state.opt_state)
    for key in conversions:
        conversions[key] = 0
    final = engine.train(exp, state, on_checkpoint=lambda s: checkpoints.append(s))
    assert final.status == "completed" and final.step == STEPS
    logged = STEPS // LOG_EVERY + 1                  # rows at steps 0, 5, 10 (and the last, 12, after the loop)
    assert len(final.history) == logged + 1 and len(checkpoints) == STEPS // CHECKPOINT_EVERY
    assert conversions["to_device"] == 2            # parameters and optimizer state, once
    assert conversions["to_host"] == logged + 2 * len(checkpoints) + 2
    assert conversions["numpy_to_tensor"] <= fields  # only in that first to_device
    assert all(isinstance(a, np.ndarray) for a in final.params)
    assert all(isinstance(a, np.ndarray) for s in checkpoints for a in (*s.params, *s.opt_state.values()))


def test_between_steps_the_state_holds_tensors(monkeypatch):
    import torch

    exp = engine.build(_config(2, "float64", "fo-anil", "adam"))
    seen = []
    gradient = type(exp).gradient

    def spy(self, params, rng):
        seen.append(params)
        return gradient(self, params, rng)

    monkeypatch.setattr(type(exp), "gradient", spy)
    engine.train(exp, exp.initial_state())
    assert len(seen) == STEPS + 1 and all(isinstance(a, torch.Tensor) for p in seen for a in p)
