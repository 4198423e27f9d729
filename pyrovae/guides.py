"""Amortized guides q(z|x), registered by name.

A guide is an ``nn.Module`` that maps the encoder's features h(x)
``(batch, n_hidden)`` to a distribution over z with batch shape ``(batch,)``
and event shape ``(n_latent,)``. The VAE samples it at the latent site.

- ``normal``: the mean-field Gaussian of Kingma & Welling (2014),
  z = mu(x) + sigma(x) * eps.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from pyrovae.config import ModelConfig
from pyrovae.registry import Registry

GUIDES: Registry[type[Guide]] = Registry("guide")


class Guide(nn.Module):
    """Base class: ``forward(h) -> q(z|x)``."""

    def __init__(self, n_hidden: int, n_latent: int, config: ModelConfig) -> None:
        super().__init__()
        self.n_hidden = n_hidden
        self.n_latent = n_latent

    def forward(self, h: torch.Tensor) -> dist.TorchDistribution:
        raise NotImplementedError


@GUIDES.register("normal")
class DiagonalNormalGuide(Guide):
    """Normal(mu(h), sigma(h)) with independent coordinates."""

    #: Floor on sigma: softplus keeps it positive without exp's overflow, the
    #: floor keeps log q finite when the encoder pushes a unit to certainty.
    min_scale = 1e-4

    def __init__(self, n_hidden: int, n_latent: int, config: ModelConfig) -> None:
        super().__init__(n_hidden, n_latent, config)
        self.loc = nn.Linear(n_hidden, n_latent)
        self.raw_scale = nn.Linear(n_hidden, n_latent)

    def forward(self, h: torch.Tensor) -> dist.TorchDistribution:
        z_loc = self.loc(h)  # (batch, n_latent)
        z_scale = F.softplus(self.raw_scale(h)) + self.min_scale  # (batch, n_latent)
        return dist.Normal(z_loc, z_scale).to_event(1)
