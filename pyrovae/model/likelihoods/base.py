"""The contract of an observation model p(x|z)."""

from __future__ import annotations

from typing import ClassVar

import pyro.distributions as dist
import torch
from torch import nn

from pyrovae.config import ModelConfig
from pyrovae.registry import Registry

LIKELIHOODS: Registry[type[Likelihood]] = Registry("likelihood")

IMAGE_DIMS = 3  # (C, H, W) form one event


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
