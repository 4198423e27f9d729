"""A two-level, top-down guide q(z|x) = q(z2|x) q(z1|x, z2) over z = [z1, z2]: the
inference model of the hierarchical VAE of Tomczak & Welling (2018, "VAE with a
VampPrior", Sec. 3.2), top-down as in Sønderby et al. (2016, "Ladder Variational
Autoencoders") but without their precision-weighted merge with the prior.

q(z2|x) = N(mu2(h), sigma2(h)) and q(z1|x, z2) = N(mu1(h, z2), sigma1(h, z2)), h the
encoder's features. It is a standard Normal pushed through
:class:`~pyrovae.model.hierarchy.TopDownAffine`, so log q(z|x) is exact at any z
(``scores_any_z``) and its spread can be tempered like the Gaussian guides'.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from pyrovae.components import Option, sizes
from pyrovae.model.context import ModelContext
from pyrovae.model.guides.base import Guide, tempered_gaussian
from pyrovae.model.hierarchy import TOP_DIM, TopDownAffine, check_top_dim, top_size
from pyrovae.model.networks.mlp import mlp_layers

LADDER_HIDDEN = Option(
    "ladder_hidden",
    (128,),
    "Hidden sizes of the ladder guide's network from (h(x), z2) to z1's mean and scale, "
    "e.g. 128 or 64,64.",
    sizes,
)


class LadderGuide(Guide):
    """Two levels, top-down: z2 ~ N(mu2(h), sigma2(h)), then z1 ~ N(mu1(h, z2), sigma1(h, z2)).

    z2 is the last ``top_dim`` coordinates of z; the decoder reads all of z.
    """

    name = "ladder"
    options = (TOP_DIM, LADDER_HIDDEN)
    #: Scales the standard Normal both levels are drawn from.
    temperable = True
    min_scale = 1e-4

    @classmethod
    def check(cls, options: Mapping[str, Any], context: ModelContext) -> None:
        check_top_dim(options, context, cls.title())

    def __init__(
        self,
        context: ModelContext,
        n_features: int,
        *,
        top_dim: int | None = None,
        ladder_hidden: tuple[int, ...] = (128,),
    ) -> None:
        super().__init__(context, n_features)
        self.n_top = top_size(self.n_latent, top_dim)
        n_bottom = self.n_latent - self.n_top
        self.top_loc = nn.Linear(n_features, self.n_top)
        self.top_raw_scale = nn.Linear(n_features, self.n_top)
        # The first layer reads [h, z2] as two maps added, so that h (batch, F) and
        # z2 (..., batch, top_dim) broadcast (vectorized particles, codes scored
        # against every image).
        width = ladder_hidden[0]
        self.from_h = nn.Linear(n_features, width)
        self.from_top = nn.Linear(self.n_top, width, bias=False)
        self.net = mlp_layers(list(ladder_hidden))
        self.loc = nn.Linear(ladder_hidden[-1], n_bottom)
        self.raw_scale = nn.Linear(ladder_hidden[-1], n_bottom)

    def forward(self, h: torch.Tensor) -> dist.TorchDistribution:
        top_loc = self.top_loc(h)  # (batch, top_dim)
        top_scale = F.softplus(self.top_raw_scale(h)) + self.min_scale  # (batch, top_dim)
        from_h = self.from_h(h)  # (batch, ladder_hidden[0])

        def bottom(z2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            hidden = self.net(torch.relu(from_h + self.from_top(z2)))  # (..., batch, width)
            return self.loc(hidden), F.softplus(self.raw_scale(hidden)) + self.min_scale

        loc = h.new_zeros(*h.shape[:-1], self.n_latent)  # (batch, n_latent)
        base = dist.Normal(loc, torch.ones_like(loc)).to_event(1)
        transform = TopDownAffine(top_loc, top_scale, bottom, self.n_top)
        return dist.TransformedDistribution(base, [transform])

    @classmethod
    def temper(cls, qz: dist.TorchDistribution, temperature: float) -> dist.TorchDistribution:
        return tempered_gaussian(qz, temperature)
