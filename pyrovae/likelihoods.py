"""Observation models p(x|z), registered by name.

Each likelihood is an ``nn.Module`` built from the image shape and the model
config; called on the decoder's output ``(..., C, H, W)`` it returns a Pyro
distribution whose event is the whole image. Adding one is one registered
class here; the trainer and CLI read :data:`LIKELIHOODS`.

- ``bernoulli``: binary pixels, logits from the decoder.
- ``continuous-bernoulli``: intensities in [0, 1] with the normalizing
  constant of Loaiza-Ganem & Cunningham (2019), "The continuous Bernoulli".
- ``gaussian``: intensities; the decoder's output is the mean (so a linear
  decoder gives probabilistic PCA), scale learned per pixel, shared, or fixed.
"""

from __future__ import annotations

from typing import ClassVar

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from pyrovae.config import ModelConfig
from pyrovae.registry import Registry

LIKELIHOODS: Registry[type[Likelihood]] = Registry("likelihood")

_IMAGE_DIMS = 3  # (C, H, W) form one event


class Likelihood(nn.Module):
    """Base class: ``forward(decoded) -> p(x|z)`` with the image as event."""

    #: True when observations must be exactly 0 or 1 (so the data are binarized).
    binary: ClassVar[bool] = False
    #: True when ``log_prob`` is the log of a probability mass, so -log p(x) is a code
    #: length; False for a density (bits/dim then needs 8-bit data to dequantize).
    discrete: ClassVar[bool] = False

    def __init__(self, image_shape: tuple[int, int, int], config: ModelConfig) -> None:
        super().__init__()
        self.image_shape = tuple(image_shape)

    def forward(self, decoded: torch.Tensor) -> dist.TorchDistribution:
        raise NotImplementedError


@LIKELIHOODS.register("bernoulli")
class BernoulliLikelihood(Likelihood):
    binary = True
    discrete = True

    def forward(self, decoded: torch.Tensor) -> dist.TorchDistribution:
        return dist.Bernoulli(logits=decoded).to_event(_IMAGE_DIMS)


@LIKELIHOODS.register("continuous-bernoulli")
class ContinuousBernoulliLikelihood(Likelihood):
    def forward(self, decoded: torch.Tensor) -> dist.TorchDistribution:
        return dist.ContinuousBernoulli(logits=decoded).to_event(_IMAGE_DIMS)


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
        return dist.Normal(decoded, self.scale().expand_as(decoded)).to_event(_IMAGE_DIMS)
