"""The mean-field Gaussian guide of Kingma & Welling (2014),
z = mu(x) + sigma(x) * eps.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from pyrovae.model.context import ModelContext
from pyrovae.model.distributions import ReparameterizedNormal
from pyrovae.model.guides.base import Guide, tempered_gaussian


class DiagonalNormalGuide(Guide):
    """Mean-field Gaussian: Normal(mu(h), sigma(h)) with independent coordinates."""

    name = "normal"
    #: Floor on sigma: softplus keeps it positive without exp's overflow, the
    #: floor keeps log q finite when the encoder pushes a unit to certainty.
    min_scale = 1e-4
    #: The Gaussian's scale is multiplied by the temperature (for the flow
    #: guides built on it: the scale of their Gaussian base, before the layers).
    temperable = True
    has_closed_form_mean = True
    local_family = "normal"

    def __init__(self, context: ModelContext, n_features: int, **options: object) -> None:
        super().__init__(context, n_features)
        self.loc = nn.Linear(n_features, self.n_latent)
        self.raw_scale = nn.Linear(n_features, self.n_latent)

    def gaussian(self, h: torch.Tensor) -> dist.TorchDistribution:
        """Normal(mu(h), sigma(h)), event ``(n_latent,)``."""
        z_loc = self.loc(h)  # (batch, n_latent)
        z_scale = F.softplus(self.raw_scale(h)) + self.min_scale  # (batch, n_latent)
        return ReparameterizedNormal(z_loc, z_scale).to_event(1)

    def forward(self, h: torch.Tensor) -> dist.TorchDistribution:
        return self.gaussian(h)

    @classmethod
    def temper(cls, qz: dist.TorchDistribution, temperature: float) -> dist.TorchDistribution:
        return tempered_gaussian(qz, temperature)
