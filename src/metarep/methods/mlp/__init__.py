"""The methods of the multi-layer network (`[model] arch = "mlp"`), registered under arch "mlp"."""

from metarep.methods.mlp import anil, fo_anil, fo_maml, maml, multitask, none, oracle

MODULES = (fo_anil, anil, fo_maml, maml, multitask, oracle, none)
METHODS = tuple(module.METHOD for module in MODULES)
