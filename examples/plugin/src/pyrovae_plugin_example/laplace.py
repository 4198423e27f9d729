"""Laplace intensities: heavier tails than the Gaussian, so a few badly reconstructed
pixels cost less."""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from torch import nn

from pyrovae.components import Option, positive_float
from pyrovae.model.context import ModelContext
from pyrovae.model.likelihoods import Likelihood


class LaplaceLikelihood(Likelihood):
    """Intensities: Laplace(decoded, b) per pixel, the scale b learned per pixel."""

    name = "laplace"
    options = (
        Option("laplace_scale", 0.1, "Starting Laplace scale b of every pixel.", positive_float),
    )

    def __init__(self, context: ModelContext, *, laplace_scale: float = 0.1) -> None:
        super().__init__(context)
        start = torch.full(context.shape, math.log(laplace_scale))
        self.log_scale = nn.Parameter(start)  # saved with the run's parameters

    def forward(self, decoded: torch.Tensor) -> dist.TorchDistribution:
        scale = self.log_scale.exp().clamp_min(1e-3).expand_as(decoded)
        return dist.Laplace(decoded, scale).to_event(self.event_dims)
