"""First-order MAML on the network: inner steps on every layer, first-order outer step."""

from metarep.methods.mlp.meta import mlp_meta_method

METHOD = mlp_meta_method("fo-maml", "first-order MAML on the network: inner steps on every layer, "
                         "first-order outer step", adapt_body=True, exact=False, relative_cost=6.0)
