"""The mean-field Gaussian guide of Kingma & Welling (2014),
z = mu(x) + sigma(x) * eps.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from pyrovae.config import ModelConfig
from pyrovae.model.guides.base import GUIDES, Guide, tempered_gaussian


@GUIDES.register("normal")
class DiagonalNormalGuide(Guide):
    """Normal(mu(h), sigma(h)) with independent coordinates."""

    #: Floor on sigma: softplus keeps it positive without exp's overflow, the
    #: floor keeps log q finite when the encoder pushes a unit to certainty.
    min_scale = 1e-4
    #: The Gaussian's scale is multiplied by the temperature (for the flow
    #: guides below: the scale of their Gaussian base, before the layers).
    temperable = True

    def __init__(self, n_hidden: int, n_latent: int, config: ModelConfig) -> None:
        super().__init__(n_hidden, n_latent, config)
        self.loc = nn.Linear(n_hidden, n_latent)
        self.raw_scale = nn.Linear(n_hidden, n_latent)

    def forward(self, h: torch.Tensor) -> dist.TorchDistribution:
        z_loc = self.loc(h)  # (batch, n_latent)
        z_scale = F.softplus(self.raw_scale(h)) + self.min_scale  # (batch, n_latent)
        return dist.Normal(z_loc, z_scale).to_event(1)

    @classmethod
    def temper(cls, qz: dist.TorchDistribution, temperature: float) -> dist.TorchDistribution:
        return tempered_gaussian(qz, temperature)
