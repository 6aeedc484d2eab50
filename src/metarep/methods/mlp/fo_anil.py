"""First-order ANIL on the network: inner steps on the head, first-order outer step on every layer."""

from metarep.methods.mlp.meta import mlp_meta_method

METHOD = mlp_meta_method("fo-anil", "first-order ANIL on the network: inner steps on the head, first-order "
                         "outer step on every layer", adapt_body=False, exact=False, relative_cost=3.0)
