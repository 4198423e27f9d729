"""The standard normal prior N(0, I)."""

from __future__ import annotations

import pyro.distributions as dist
import torch

from pyrovae.model.context import ModelContext
from pyrovae.model.distributions import StandardNormal
from pyrovae.model.priors.base import Prior


class StandardNormalPrior(Prior):
    """N(0, I), the prior of Kingma & Welling (2014)."""

    name = "normal"
    temperable = True
    loc: torch.Tensor
    scale: torch.Tensor

    def __init__(self, context: ModelContext) -> None:
        super().__init__(context)
        self.register_buffer("loc", torch.zeros(self.n_latent))
        self.register_buffer("scale", torch.ones(self.n_latent))

    def forward(self) -> dist.TorchDistribution:
        return StandardNormal(self.loc, self.scale).to_event(1)

    def sample(self, n: int, temperature: float = 1.0) -> torch.Tensor:
        return dist.Normal(self.loc, temperature * self.scale).to_event(1).sample((n,))
