"""The registry of training methods: one small module each, all with the same shape (MATH 3)."""

from __future__ import annotations

from metarep.methods import anil, burer_monteiro, fo_anil, fo_maml, maml, moments, none, oracle
from metarep.methods.base import Method, outer_step, shared_head

METHODS: dict[str, Method] = {m.name: m for m in (fo_anil.METHOD, anil.METHOD, fo_maml.METHOD, maml.METHOD,
                                                   burer_monteiro.METHOD, moments.METHOD, oracle.METHOD,
                                                   none.METHOD)}


def get_method(name: str) -> Method:
    """The method called `name`, or a ValueError listing the known ones."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"train.method must be one of {', '.join(sorted(METHODS))}, got {name!r}") from None


__all__ = ["METHODS", "Method", "get_method", "outer_step", "shared_head"]
