"""ANIL on the network: inner steps on the head, exact second-order outer step on every layer."""

from metarep.methods.mlp.meta import mlp_meta_method

METHOD = mlp_meta_method("anil", "ANIL on the network: inner steps on the head, exact second-order outer "
                         "step", adapt_body=False, exact=True, relative_cost=4.0)
