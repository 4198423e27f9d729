"""N(0, I) pushed through masked autoregressive layers (MAF; Papamakarios et al.
2017, "Masked Autoregressive Flow for Density Estimation"): log p(z) is one
network pass per layer at any z, sampling is sequential (cheap: z is small).
"""

from __future__ import annotations

from typing import cast

import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
from torch import nn

from pyrovae.config import ModelConfig
from pyrovae.model.priors.base import PRIORS, Prior


@PRIORS.register("flow")
class FlowPrior(Prior):
    """N(0, I) through ``config.flows`` masked autoregressive (MAF) layers.

    Each layer is the inverse of Pyro's
    :class:`~pyro.distributions.transforms.AffineAutoregressive`, so that
    log p(z) of a code from the guide costs one pass per layer; the order of
    the coordinates is reversed between layers.
    """

    temperable = True
    loc: torch.Tensor
    scale: torch.Tensor
    reverse: torch.Tensor

    def __init__(self, n_latent: int, config: ModelConfig) -> None:
        super().__init__(n_latent, config)
        self.layers = nn.ModuleList(
            T.AffineAutoregressive(
                pyro_arn(n_latent, list(config.flow_hidden)),
                # Clipping keeps a layer from collapsing or exploding a
                # direction early in training.
                log_scale_min_clip=-3.0,
                log_scale_max_clip=3.0,
            )
            for _ in range(config.flows)
        )
        self.register_buffer("loc", torch.zeros(n_latent))
        self.register_buffer("scale", torch.ones(n_latent))
        self.register_buffer("reverse", torch.arange(n_latent - 1, -1, -1))

    def _flow(self, temperature: float = 1.0) -> dist.TorchDistribution:
        base = dist.Normal(self.loc, temperature * self.scale).to_event(1)
        transforms: list[T.Transform] = []
        for i, layer in enumerate(self.layers):
            if i > 0:
                transforms.append(T.Permute(self.reverse))
            transforms.append(cast(T.AffineAutoregressive, layer).inv)
        return dist.TransformedDistribution(base, transforms)

    def forward(self) -> dist.TorchDistribution:
        return self._flow()

    def sample(self, n: int, temperature: float = 1.0) -> torch.Tensor:
        return self._flow(temperature).sample((n,))


def pyro_arn(n_latent: int, hidden: list[int]) -> nn.Module:
    """A MADE network in the natural order (the flow reverses it between layers)."""
    from pyro.nn import AutoRegressiveNN

    return AutoRegressiveNN(
        n_latent, hidden, permutation=cast(torch.LongTensor, torch.arange(n_latent))
    )
