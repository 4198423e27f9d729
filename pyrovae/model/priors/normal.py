"""The standard normal prior N(0, I)."""

from __future__ import annotations

import pyro.distributions as dist
import torch

from pyrovae.config import ModelConfig
from pyrovae.model.priors.base import PRIORS, Prior


@PRIORS.register("normal")
class StandardNormalPrior(Prior):
    """N(0, I)."""

    temperable = True
    loc: torch.Tensor
    scale: torch.Tensor

    def __init__(self, n_latent: int, config: ModelConfig) -> None:
        super().__init__(n_latent, config)
        self.register_buffer("loc", torch.zeros(n_latent))
        self.register_buffer("scale", torch.ones(n_latent))

    def forward(self) -> dist.TorchDistribution:
        return dist.Normal(self.loc, self.scale).to_event(1)

    def sample(self, n: int, temperature: float = 1.0) -> torch.Tensor:
        return dist.Normal(self.loc, temperature * self.scale).to_event(1).sample((n,))
