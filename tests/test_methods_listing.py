"""metarep.methods() is a plain function listing the registry; the registry is the package
metarep.methods, reached as the README says (`from metarep.methods import Method, register`)."""

from __future__ import annotations

import sys
import types

import metarep


def test_methods_is_a_function_and_the_package_a_plain_module():
    assert isinstance(metarep.methods, types.FunctionType)
    assert type(sys.modules["metarep.methods"]) is types.ModuleType
    table = metarep.methods("linear")
    assert "fo-anil" in set(table["name"]) and set(metarep.methods("mlp")["name"]).isdisjoint({"moments"})


def test_the_registry_is_reached_from_the_package_and_through_the_function():
    from metarep.methods import Method, register, registered, unregister

    assert metarep.methods.register is register and metarep.methods.Method is Method
    assert metarep.methods.unregister is unregister and metarep.methods.registered is registered
    assert len(metarep.methods()) == len(registered())
