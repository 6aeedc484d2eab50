"""The registry of model architectures (`[model] arch`).

An architecture declares the extra [model] keys it takes (`Options`) and where its experiment
lives; the engine builds that experiment and runs it with the one training loop. The module of
the experiment is imported only when a run needs it (the mlp one needs torch).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

from metarep.models import mlp_options


class NoOptions(BaseModel):
    """An architecture with no [model] keys besides the shared ones."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Arch:
    """name: the value of `model.arch`; Options: its own [model] keys; experiment: the module that
    defines `build(config) -> Experiment` and `estimate_bytes(config) -> dict`; devices: the
    `train.device` values it runs on; teachers: the `problem.teacher` values its test risk and
    theory are written for."""

    name: str
    summary: str
    Options: type[BaseModel] = NoOptions
    experiment: str = ""
    devices: tuple[str, ...] = ("cpu",)
    teachers: tuple[str, ...] = ("linear",)

    def module(self):
        return importlib.import_module(self.experiment)


_ARCHS: dict[str, Arch] = {}


def register_arch(arch: Arch) -> Arch:
    _ARCHS[arch.name] = arch
    return arch


def get_arch(name: str) -> Arch:
    try:
        return _ARCHS[name]
    except KeyError:
        raise ValueError(f"model.arch must be one of {', '.join(_ARCHS)}, got {name!r}") from None


register_arch(Arch("linear", "two-layer linear network x -> x^T B w (MATH 2)", experiment="metarep.models.linear"))
register_arch(Arch("mlp", "network w^T act(W1 x) or w^T act(W2 act(W1 x)), relu or identity (torch)",
                   Options=mlp_options.Options, experiment="metarep.models.mlp", devices=("cpu", "cuda", "auto"),
                   teachers=("linear", "relu")))
