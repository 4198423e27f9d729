"""Convolutional encoder and decoder sized from the image: one stride-2 4x4
convolution per halving of the image down to about 8x8 pixels (at least two),
channels doubling from 32, as in the DCGAN family (Radford et al. 2016) and
most image VAEs since; the decoder mirrors it with transposed convolutions.

Images of 8 to 32 pixels a side (digits, MNIST, CIFAR-10) get two stages
each way, 64x64 (CelebA as usually cropped) three, 128x128 four.
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

#: Stride-2 stages halve the image until its shorter side is at most this many
#: pixels (at least two stages): 8 to 32 pixels take two, 64 three, 128 four.
FINAL_SIDE = 8

#: Channels of the first stage; each further stage doubles them, up to MAX_WIDTH.
FIRST_WIDTH, MAX_WIDTH = 32, 256


def _halved(size: int) -> int:
    return (size + 1) // 2


def n_stages(height: int, width: int) -> int:
    """Stride-2 stages for an image of ``height`` x ``width``: one per halving of the
    shorter side down to :data:`FINAL_SIDE`, and at least two."""
    stages, side = 0, min(height, width)
    while stages < 2 or side > FINAL_SIDE:
        side, stages = _halved(side), stages + 1
    return stages


def stage_widths(height: int, width: int) -> list[int]:
    """Output channels of each encoder stage: 32, 64, 128, 256, 256, ..."""
    return [min(FIRST_WIDTH * 2**i, MAX_WIDTH) for i in range(n_stages(height, width))]


def _grid(height: int, width: int) -> tuple[int, int]:
    """The feature map after the encoder's stages (each halving, rounding up)."""
    for _ in range(n_stages(height, width)):
        height, width = _halved(height), _halved(width)
    return height, width


def check_image(title: str, context: ModelContext) -> None:
    """Refuse data that are not images (C, H, W) of at least :data:`MIN_SIDE` a side,
    in one line naming the network ``title``."""
    shape = context.data_shape
    if shape is None:
        return  # checked again once the data are read
    if len(shape) != 3 or min(shape[1:]) < MIN_SIDE:
        raise ConfigError(
            f"{title} needs images (C, H, W) of at least {MIN_SIDE}x{MIN_SIDE}, "
            f"got data of shape {tuple(shape)}; use --network mlp"
        )


class ConvEncoder(nn.Module):
    """Stride-2 Conv(4x4) + ReLU stages (:func:`stage_widths`), then dense layers ``hidden``."""

    def __init__(self, image_shape: tuple[int, ...], hidden: Sequence[int]) -> None:
        super().__init__()
        channels, height, width = image_shape
        self.image_shape = tuple(image_shape)
        widths = [channels, *stage_widths(height, width)]
        layers: list[nn.Module] = []
        for n_in, n_out in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Conv2d(n_in, n_out, 4, stride=2, padding=1), nn.ReLU()]
        self.conv = nn.Sequential(*layers)
        for _ in range(len(widths) - 1):
            height, width = height // 2, width // 2  # a 4x4 kernel, stride 2, padding 1 floors
        self.dense = mlp_layers([widths[-1] * height * width, *hidden])
        self.out_features = hidden[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch_shape = x.shape[:-3]
        h = self.conv(x.reshape(-1, *self.image_shape))  # (batch, width, H', W')
        return self.dense(h.flatten(1)).reshape(*batch_shape, -1)  # (..., hidden[-1])


class ConvDecoder(nn.Module):
    """Mirror of :class:`ConvEncoder`: dense layers, then stride-2 transposed convs."""

    def __init__(self, image_shape: tuple[int, ...], hidden: Sequence[int], n_latent: int) -> None:
        super().__init__()
        channels, height, width = image_shape
        self.image_shape = tuple(image_shape)
        # Each stage doubles; start from a grid that covers the image, then crop.
        self.grid = _grid(height, width)
        widths = [*reversed(stage_widths(height, width)), channels]
        self.width = widths[0]
        sizes = [n_latent, *reversed(hidden)]
        self.dense = nn.Sequential(
            mlp_layers(sizes),
            nn.Linear(sizes[-1], widths[0] * self.grid[0] * self.grid[1]),
            nn.ReLU(),
        )
        layers: list[nn.Module] = []
        for n_in, n_out in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.ConvTranspose2d(n_in, n_out, 4, stride=2, padding=1), nn.ReLU()]
        self.deconv = nn.Sequential(*layers[:-1])  # no ReLU on the likelihood's parameters

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        batch_shape = z.shape[:-1]
        h = self.dense(z.reshape(-1, z.shape[-1])).unflatten(-1, (self.width, *self.grid))
        out = self.deconv(h)[..., : self.image_shape[1], : self.image_shape[2]]
        return out.reshape(*batch_shape, *self.image_shape)  # (..., C, H, W)


class ConvNetwork(Network):
    """Stride-2 convolutions each way, one per halving of the image down to about 8x8
    (at least two), for images (C, H, W) of at least 8x8."""

    name = "conv"
    options = (HIDDEN,)

    @classmethod
    def check(cls, options: Mapping[str, Any], context: ModelContext) -> None:
        check_image(cls.title(), context)

    def build(self, context: ModelContext) -> Networks:
        hidden = self.values["hidden"]
        return Networks(
            ConvEncoder(context.shape, hidden),
            ConvDecoder(context.shape, hidden, context.n_latent),
        )
