"""A mixture of learned diagonal Gaussians as the prior."""

from __future__ import annotations

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from pyrovae.components import Option, positive_int
from pyrovae.model.context import ModelContext
from pyrovae.model.priors.base import Prior

#: Shared with the VampPrior's number of pseudo-inputs (one ``--prior-components``).
COMPONENTS = Option(
    "prior_components", 50, "Mixture components (mog) or pseudo-inputs (vamp).", positive_int
)


class MixtureOfGaussiansPrior(Prior):
    """A learned mixture of diagonal Gaussians: weights, means and scales."""

    name = "mog"
    options = (COMPONENTS,)
    min_scale = 1e-3
    temperable = True

    def __init__(self, context: ModelContext, *, prior_components: int = 50) -> None:
        super().__init__(context)
        k = prior_components
        # Spread-out means so that the components do not start identical.
        self.locs = nn.Parameter(torch.randn(k, self.n_latent))  # (K, n_latent)
        # softplus(0.5413) = 1: unit scales at the start.
        self.raw_scales = nn.Parameter(torch.full((k, self.n_latent), 0.5413))
        self.logits = nn.Parameter(torch.zeros(k))

    def _mixture(self, temperature: float = 1.0) -> dist.TorchDistribution:
        scales = temperature * (F.softplus(self.raw_scales) + self.min_scale)  # (K, n_latent)
        components = dist.Normal(self.locs, scales).to_event(1)  # batch (K,)
        return dist.MixtureSameFamily(dist.Categorical(logits=self.logits), components)

    def forward(self) -> dist.TorchDistribution:
        return self._mixture()

    def sample(self, n: int, temperature: float = 1.0) -> torch.Tensor:
        return self._mixture(temperature).sample((n,))
