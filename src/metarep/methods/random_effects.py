"""Random effects: the statistician's baseline, a linear mixed model (MATH 8; MATH 3, 'Baselines').

y = x^T theta_t + e, theta_t ~ N(mu, G), e ~ N(0, sigma^2): the paper's own data model is this
one with G = B* Sigma* B*^T (rank k). The fit is maximum likelihood from the training tasks'
sufficient statistics (metarep.linear.random_effects), G full (L-BFGS on its factor) or of rank `rank`
(EM). The state is
Params(I_d, mu): width d, the fixed effect as the shared head. A new task's head is the BLUP
(test.adapt = "bayes", the default): the posterior mean of theta given its m_test rows under
the fitted prior, `head_prior`.
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from metarep.linear import random_effects as rfx
from metarep.linear.params import Params
from metarep.methods.base import Method


class Hyper(BaseModel):
    """[method] keys of random-effects."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rank: Literal["full"] | Annotated[int, Field(ge=1, strict=True)] = "full"
    """rank of the random-effects covariance G: "full" (d x d) or r (G = L L^T, L d x r)"""


def _rank(rank) -> int | None:
    return None if rank == "full" else int(rank)


def random_effects_fit(problem, tasks, *, width=None, rng=None, rank="full") -> Params:
    """Params(I_d, mu) with mu the fitted fixed effect. `problem`, `width`, `rng` are not used."""
    prior = rfx.fit_prior(rfx.stacked_stats(tasks), rank=_rank(rank))
    return Params(np.eye(tasks.d), prior.mu)


def random_effects_prior(params, stats: rfx.Stats, *, rank="full") -> rfx.Prior:
    """The fitted prior (mu, G, sigma^2) on the raw inputs (B = I): the BLUP's prior."""
    return rfx.fit_prior(stats, rank=_rank(rank))


def _check_rank(config) -> None:
    rank = config.method.hyper.rank
    if rank != "full" and rank > config.problem.d:
        raise ValueError(f"method.rank must be \"full\" or at most d = {config.problem.d} for method "
                         f"'random-effects', got {rank}")


METHOD = Method(
    name="random-effects",
    summary="reference: linear mixed model (random slopes) by maximum likelihood; new tasks: its BLUP",
    adapts="nothing (new tasks: the BLUP, the posterior mean of theta under the fitted prior)",
    default_adapt="bayes",
    Hyper=Hyper,
    features="raw x",
    fixed_width=lambda d, k: d,
    relative_cost=0.0,
    fit=random_effects_fit,
    head_prior=random_effects_prior,
    check=_check_rank,
    cost="once: O(N m d^2) statistics, then O(N min(d, m) d^2) per L-BFGS evaluation (full G) or "
         "O(N d^2 r) per EM iteration (rank r)",
)
