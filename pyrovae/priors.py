"""Priors p(z), registered by name.

A prior is an ``nn.Module`` (so a learned prior trains with the rest of the
model) whose ``forward()`` returns a distribution with event shape
``(n_latent,)`` and empty batch shape; the data plate broadcasts it.
``sample(n, temperature)`` draws codes for ``pyrovae sample``.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import nn

from pyrovae.config import ModelConfig
from pyrovae.registry import Registry

PRIORS: Registry[type[Prior]] = Registry("prior")


class Prior(nn.Module):
    """Base class of priors over ``n_latent``-dimensional codes."""

    def __init__(self, n_latent: int, config: ModelConfig) -> None:
        super().__init__()
        self.n_latent = n_latent

    def forward(self) -> dist.TorchDistribution:
        raise NotImplementedError

    def sample(self, n: int, temperature: float = 1.0) -> torch.Tensor:
        """``n`` codes ``(n, n_latent)``; ``temperature`` < 1 draws nearer the modes."""
        raise NotImplementedError


@PRIORS.register("normal")
class StandardNormalPrior(Prior):
    """N(0, I)."""

    def __init__(self, n_latent: int, config: ModelConfig) -> None:
        super().__init__(n_latent, config)
        self.register_buffer("loc", torch.zeros(n_latent))
        self.register_buffer("scale", torch.ones(n_latent))

    def forward(self) -> dist.TorchDistribution:
        return dist.Normal(self.loc, self.scale).to_event(1)

    def sample(self, n: int, temperature: float = 1.0) -> torch.Tensor:
        return dist.Normal(self.loc, temperature * self.scale).to_event(1).sample((n,))
