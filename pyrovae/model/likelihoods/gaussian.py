"""Gaussian intensities: the decoder's output is the mean (so a linear decoder
gives probabilistic PCA); the scale is learned per pixel, shared, or fixed.
"""

from __future__ import annotations

from typing import ClassVar

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from pyrovae.config import ModelConfig
from pyrovae.model.likelihoods.base import IMAGE_DIMS, LIKELIHOODS, Likelihood


@LIKELIHOODS.register("gaussian")
class GaussianLikelihood(Likelihood):
    """Normal(decoded, scale); ``config.obs_scale`` picks the scale's form."""

    #: Floor on a learned scale, so that the density cannot grow without bound
    #: on pixels that are constant in the data (image borders).
    min_scale: ClassVar[float] = 1e-3
    fixed_scale: torch.Tensor  # a buffer, when the scale is fixed

    def __init__(self, image_shape: tuple[int, int, int], config: ModelConfig) -> None:
        super().__init__(image_shape, config)
        self.mode = config.obs_scale
        if self.mode == "pixel":
            self.raw_scale = nn.Parameter(torch.zeros(image_shape))
        elif self.mode == "shared":
            self.raw_scale = nn.Parameter(torch.zeros(()))
        else:
            self.register_buffer("fixed_scale", torch.tensor(float(self.mode)))

    def scale(self) -> torch.Tensor:
        if self.mode in ("pixel", "shared"):
            return F.softplus(self.raw_scale) + self.min_scale
        return self.fixed_scale

    def forward(self, decoded: torch.Tensor) -> dist.TorchDistribution:
        return dist.Normal(decoded, self.scale().expand_as(decoded)).to_event(IMAGE_DIMS)
