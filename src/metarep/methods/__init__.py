"""The registry of training methods: one small module each, all with the same shape (MATH 3).

A method is registered under (arch, name); `register` adds one (a new method is one file that
calls it, or a test module that does)."""

from __future__ import annotations

from metarep.methods import (
    anil,
    burer_monteiro,
    fo_anil,
    fo_maml,
    maml,
    mlp,
    moments,
    none,
    oracle,
    pooled,
    random_effects,
)
from metarep.methods.base import Method, NoHyper, outer_step, shared_head

_REGISTRY: dict[tuple[str, str], Method] = {}
DEFAULT_METHOD = fo_anil.METHOD.name


def register(method: Method, *, replace: bool = False) -> Method:
    """Add `method` under (method.arch, method.name); refuses a second one of the same key."""
    key = (method.arch, method.name)
    if key in _REGISTRY and not replace and _REGISTRY[key] is not method:
        raise ValueError(f"a method {method.name!r} is already registered for arch {method.arch!r}")
    _REGISTRY[key] = method
    return method


def unregister(name: str, arch: str = "linear") -> None:
    _REGISTRY.pop((arch, name), None)


def registered(arch: str | None = None) -> list[Method]:
    """Every registered method (of one arch), in registration order."""
    return [m for (a, _), m in _REGISTRY.items() if arch is None or a == arch]


def get_method(name: str, arch: str = "linear") -> Method:
    """The method called `name` for `arch`, or a ValueError listing the known ones."""
    try:
        return _REGISTRY[(arch, name)]
    except KeyError:
        known = ", ".join(m.name for m in registered(arch))
        raise ValueError(f"method.name must be one of {known} for model.arch = {arch!r}, got {name!r}") from None


def table(arch: str | None = None):
    """The registered methods and what each can do: a pandas DataFrame, one row each
    (`metarep.methods()`)."""
    import pandas as pd

    return pd.DataFrame([m.capabilities() for m in registered(arch)])


for _module in (fo_anil, anil, fo_maml, maml, burer_monteiro, moments, oracle, none, pooled, random_effects):
    register(_module.METHOD)
for _method in mlp.METHODS:
    register(_method)

__all__ = ["DEFAULT_METHOD", "Method", "NoHyper", "get_method", "outer_step", "register", "registered",
           "shared_head", "table", "unregister"]
