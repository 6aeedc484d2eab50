"""pytest plugin for mutation testing (`[tool.mutmut]` in pyproject.toml): the population step
runs in its plain-Python form, the one mutmut rewrites (numba cannot compile mutmut's
trampolines). Not loaded by an ordinary test run."""

from __future__ import annotations


def pytest_configure(config) -> None:
    from metarep.linear import population

    population._HAVE_NUMBA = False
