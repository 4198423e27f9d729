"""N(0, I) pushed through masked autoregressive layers (MAF; Papamakarios et al.
2017, "Masked Autoregressive Flow for Density Estimation"): log p(z) is one
network pass per layer at any z, sampling is sequential (cheap: z is small).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
from torch import nn

from pyrovae.model.context import ModelContext
from pyrovae.model.distributions import FlowDistribution, Reverse, StandardNormal
from pyrovae.model.flows import FLOW_HIDDEN, FLOWS, check_made_widths, made
from pyrovae.model.priors.base import Prior


class FlowPrior(Prior):
    """N(0, I) through masked autoregressive (MAF) layers, learned.

    Each layer is the inverse of Pyro's
    :class:`~pyro.distributions.transforms.AffineAutoregressive`, so that
    log p(z) of a code from the guide costs one pass per layer; the order of
    the coordinates is reversed between layers.
    """

    name = "flow"
    options = (FLOWS, FLOW_HIDDEN)
    temperable = True
    loc: torch.Tensor
    scale: torch.Tensor
    reverse: torch.Tensor

    @classmethod
    def check(cls, options: Mapping[str, Any], context: ModelContext) -> None:
        check_made_widths(options, context, cls.title())

    def __init__(
        self, context: ModelContext, *, flows: int = 4, flow_hidden: tuple[int, ...] = (128,)
    ) -> None:
        super().__init__(context)
        n_latent = self.n_latent
        self.layers = nn.ModuleList(
            # Clipping keeps a layer from collapsing or exploding a direction early on.
            T.AffineAutoregressive(
                made(n_latent, flow_hidden), log_scale_min_clip=-3.0, log_scale_max_clip=3.0
            )
            for _ in range(flows)
        )
        self.register_buffer("loc", torch.zeros(n_latent))
        self.register_buffer("scale", torch.ones(n_latent))
        self.register_buffer("reverse", torch.arange(n_latent - 1, -1, -1))

    def _flow(self, temperature: float = 1.0) -> dist.TorchDistribution:
        base = (
            StandardNormal(self.loc, self.scale)
            if temperature == 1.0
            else dist.Normal(self.loc, temperature * self.scale)
        ).to_event(1)
        transforms: list[T.Transform] = []
        for i, layer in enumerate(self.layers):
            if i > 0:
                transforms.append(Reverse(self.reverse))
            transforms.append(cast(T.AffineAutoregressive, layer).inv)
        return FlowDistribution(base, transforms)

    def forward(self) -> dist.TorchDistribution:
        return self._flow()

    def sample(self, n: int, temperature: float = 1.0) -> torch.Tensor:
        return self._flow(temperature).sample((n,))
