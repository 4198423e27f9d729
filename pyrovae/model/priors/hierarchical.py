"""A two-level, top-down prior p(z) = p(z2) p(z1|z2) over z = [z1, z2]: the prior of
the hierarchical VAE of Tomczak & Welling (2018, "VAE with a VampPrior", Sec. 3.2),
with p(z2) = N(0, I) and p(z1|z2) a diagonal Gaussian whose mean and scale a small
network computes from z2. Its density is exact at any z (see
:mod:`pyrovae.model.hierarchy`); its KL to a guide has no closed form, so the
ELBO samples it, as for the flow prior.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from pyrovae.components import Option, sizes
from pyrovae.model.context import ModelContext
from pyrovae.model.hierarchy import TOP_DIM, TopDownAffine, check_top_dim, top_size
from pyrovae.model.networks.mlp import mlp_layers
from pyrovae.model.priors.base import Prior

PRIOR_HIDDEN = Option(
    "prior_hidden",
    (128,),
    "Hidden sizes of the hierarchical prior's network from z2 to z1's mean and scale, "
    "e.g. 128 or 64,64.",
    sizes,
)


class HierarchicalPrior(Prior):
    """Two levels, top-down: N(z2; 0, I) N(z1; mu(z2), sigma(z2)), mu and sigma learned.

    z2 is the last ``top_dim`` coordinates of z. It starts as N(0, I) (the
    output layers of the z1 network start at zero weights and unit scale), and
    ``sample`` at a temperature scales the standard Normal that both levels are
    drawn from.
    """

    name = "hierarchical"
    options = (TOP_DIM, PRIOR_HIDDEN)
    temperable = True
    #: Floor on sigma(z2), so that log p(z) stays finite.
    min_scale = 1e-3
    top_loc: torch.Tensor
    top_scale: torch.Tensor

    @classmethod
    def check(cls, options: Mapping[str, Any], context: ModelContext) -> None:
        check_top_dim(options, context, cls.title())

    def __init__(
        self,
        context: ModelContext,
        *,
        top_dim: int | None = None,
        prior_hidden: tuple[int, ...] = (128,),
    ) -> None:
        super().__init__(context)
        self.n_top = top_size(self.n_latent, top_dim)
        n_bottom = self.n_latent - self.n_top
        self.net = mlp_layers([self.n_top, *prior_hidden])
        self.loc = nn.Linear(prior_hidden[-1], n_bottom)
        self.raw_scale = nn.Linear(prior_hidden[-1], n_bottom)
        with torch.no_grad():
            for layer in (self.loc, self.raw_scale):
                layer.weight.zero_()
            self.loc.bias.zero_()
            # softplus^-1(1 - min_scale): sigma(z2) starts at 1.
            self.raw_scale.bias.fill_(math.log(math.expm1(1.0 - self.min_scale)))
        self.register_buffer("top_loc", torch.zeros(self.n_top))
        self.register_buffer("top_scale", torch.ones(self.n_top))

    def conditional(self, z2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean and scale of p(z1|z2), each ``(..., n_latent - top_dim)``."""
        hidden = self.net(z2)  # (..., prior_hidden[-1])
        return self.loc(hidden), F.softplus(self.raw_scale(hidden)) + self.min_scale

    def _two_level(self, temperature: float = 1.0) -> dist.TorchDistribution:
        loc = self.top_loc.new_zeros(self.n_latent)
        base = dist.Normal(loc, temperature * torch.ones_like(loc)).to_event(1)
        transform = TopDownAffine(self.top_loc, self.top_scale, self.conditional, self.n_top)
        return dist.TransformedDistribution(base, [transform])

    def forward(self) -> dist.TorchDistribution:
        return self._two_level()

    def sample(self, n: int, temperature: float = 1.0) -> torch.Tensor:
        return self._two_level(temperature).sample((n,))
