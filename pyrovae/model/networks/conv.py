"""Convolutional encoder and decoder: two stride-2 convolutions each way, as in
most image VAEs since Salimans et al. (2015) and the DCGAN family.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from pyrovae.errors import ConfigError
from pyrovae.model.context import ModelContext
from pyrovae.model.networks.base import HIDDEN, Network, Networks
from pyrovae.model.networks.mlp import mlp_layers

#: Two stride-2 convolutions need at least this many pixels a side.
MIN_SIDE = 8


def _halved(size: int) -> int:
    return (size + 1) // 2


class ConvEncoder(nn.Module):
    """Conv(32, 4, stride 2) -> Conv(64, 4, stride 2) -> dense layers ``hidden``."""

    def __init__(self, image_shape: tuple[int, ...], hidden: Sequence[int]) -> None:
        super().__init__()
        channels, height, width = image_shape
        self.image_shape = tuple(image_shape)
        self.conv = nn.Sequential(
            nn.Conv2d(channels, 32, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2, padding=1),
            nn.ReLU(),
        )
        n_features = 64 * (height // 4) * (width // 4)
        self.dense = mlp_layers([n_features, *hidden])
        self.out_features = hidden[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch_shape = x.shape[:-3]
        h = self.conv(x.reshape(-1, *self.image_shape))  # (batch, 64, H/4, W/4)
        return self.dense(h.flatten(1)).reshape(*batch_shape, -1)  # (..., hidden[-1])


class ConvDecoder(nn.Module):
    """Mirror of :class:`ConvEncoder`: dense layers, then two stride-2 transposed convs."""

    def __init__(self, image_shape: tuple[int, ...], hidden: Sequence[int], n_latent: int) -> None:
        super().__init__()
        channels, height, width = image_shape
        self.image_shape = tuple(image_shape)
        # Upsampling doubles twice; start from a grid that covers the image, then crop.
        self.grid = (_halved(_halved(height)), _halved(_halved(width)))
        widths = [n_latent, *reversed(hidden)]
        self.dense = nn.Sequential(
            mlp_layers(widths), nn.Linear(widths[-1], 64 * self.grid[0] * self.grid[1]), nn.ReLU()
        )
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(32, channels, 4, stride=2, padding=1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        batch_shape = z.shape[:-1]
        h = self.dense(z.reshape(-1, z.shape[-1])).unflatten(-1, (64, *self.grid))
        out = self.deconv(h)[..., : self.image_shape[1], : self.image_shape[2]]
        return out.reshape(*batch_shape, *self.image_shape)  # (..., C, H, W)


class ConvNetwork(Network):
    """Two stride-2 convolutions each way, for images (C, H, W) of at least 8x8."""

    name = "conv"
    options = (HIDDEN,)

    @classmethod
    def check(cls, options: Mapping[str, Any], context: ModelContext) -> None:
        shape = context.data_shape
        if shape is None:
            return  # checked again once the data are read
        if len(shape) != 3 or min(shape[1:]) < MIN_SIDE:
            raise ConfigError(
                f"{cls.title()} needs images (C, H, W) of at least {MIN_SIDE}x{MIN_SIDE}, "
                f"got data of shape {tuple(shape)}; use --network mlp"
            )

    def build(self, context: ModelContext) -> Networks:
        hidden = self.values["hidden"]
        return Networks(
            ConvEncoder(context.shape, hidden),
            ConvDecoder(context.shape, hidden, context.n_latent),
        )
