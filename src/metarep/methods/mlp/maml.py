"""MAML on the network: inner steps on every layer, exact second-order outer step."""

from metarep.methods.mlp.meta import mlp_meta_method

METHOD = mlp_meta_method("maml", "MAML on the network: inner steps on every layer, exact second-order outer "
                         "step", adapt_body=True, exact=True, relative_cost=10.0)
