"""Gaussian intensities: the decoder's output is the mean (so a linear decoder
gives probabilistic PCA); the scale is learned per pixel, shared, or fixed.
"""

from __future__ import annotations

from typing import ClassVar

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from pyrovae.components import Option, choice_or_positive_float
from pyrovae.model.context import ModelContext
from pyrovae.model.likelihoods.base import Likelihood


class GaussianLikelihood(Likelihood):
    """Intensities: Normal(decoded, scale), the scale learned or fixed."""

    name = "gaussian"
    options = (
        Option(
            "obs_scale",
            "pixel",
            "Gaussian scale: pixel (learned per pixel), shared (one learned), or a fixed number.",
            choice_or_positive_float("pixel", "shared"),
        ),
    )
    #: Floor on a learned scale, so that the density cannot grow without bound
    #: on pixels that are constant in the data (image borders).
    min_scale: ClassVar[float] = 1e-3
    fixed_scale: torch.Tensor  # a buffer, when the scale is fixed

    def __init__(self, context: ModelContext, *, obs_scale: str | float = "pixel") -> None:
        super().__init__(context)
        self.mode = obs_scale
        if obs_scale == "pixel":
            self.raw_scale = nn.Parameter(torch.zeros(self.data_shape))
        elif obs_scale == "shared":
            self.raw_scale = nn.Parameter(torch.zeros(()))
        else:
            self.register_buffer("fixed_scale", torch.tensor(float(obs_scale)))

    def scale(self) -> torch.Tensor:
        if self.mode in ("pixel", "shared"):
            return F.softplus(self.raw_scale) + self.min_scale
        return self.fixed_scale

    def forward(self, decoded: torch.Tensor) -> dist.TorchDistribution:
        return dist.Normal(decoded, self.scale().expand_as(decoded)).to_event(self.event_dims)
