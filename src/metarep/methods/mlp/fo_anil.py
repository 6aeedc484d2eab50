"""First-order ANIL on the network: inner steps on the head, first-order outer step on every layer.
On the CPU its gradient is the compiled pass of `metarep.nonlinear.fused`, elsewhere torch's."""

import dataclasses

from metarep.methods.mlp.meta import mlp_meta_method
from metarep.nonlinear.fused import head_gradient

_TORCH = mlp_meta_method("fo-anil", "first-order ANIL on the network: inner steps on the head, first-order "
                         "outer step on every layer", adapt_body=False, exact=False, relative_cost=3.0)
METHOD = dataclasses.replace(_TORCH, gradient=head_gradient(_TORCH.gradient, exact=False))
