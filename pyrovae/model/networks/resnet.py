"""Residual convolutional encoder and decoder for images, sized from the image like
:mod:`pyrovae.model.networks.conv`: one stride-2 stage per halving of the image down
to about 8x8 pixels (at least two), each stage made of pre-activation residual
blocks (He et al. 2016, "Identity Mappings in Deep Residual Networks"), as in the
encoders and decoders of most image VAEs since IAF (Kingma et al. 2016) and NVAE
(Vahdat & Kautz 2020). The decoder mirrors the encoder with nearest-neighbour
upsampling followed by a residual block, then crops to the image.

Normalization is GroupNorm (Wu & He 2018), not BatchNorm. BatchNorm normalizes
each example with statistics of the whole batch, so in training q(z|x) and
p(x|z) of one image would depend on the other images of the batch: the ELBO
Pyro estimates would no longer be a sum of independent per-example terms inside
``pyro.plate("data")``, and importance sampling, which stacks many draws of z
for one image into a batch, would score the draws against each other.
GroupNorm normalizes each example on its own, so every image's likelihood is
its own, in training and in evaluation alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from pyrovae.components import Option, positive_int
from pyrovae.model.context import ModelContext
from pyrovae.model.networks.base import HIDDEN, Network, Networks
from pyrovae.model.networks.conv import _grid, check_image, n_stages
from pyrovae.model.networks.mlp import mlp_layers

#: Channels of the stem and the first stage (``--channels-base``); each further
#: stage doubles them, up to ``MAX_WIDENING`` times the base.
CHANNELS_BASE = Option(
    "channels_base",
    16,
    "Channels of the residual network's first stage; each deeper one doubles them (up to 8x).",
    positive_int,
)
#: Residual blocks per resolution stage (``--blocks``).
BLOCKS = Option(
    "blocks", 1, "Residual blocks per resolution stage of the residual network.", positive_int
)

MAX_WIDENING = 8

#: At most this many groups per GroupNorm (Wu & He's default is 32 for wide layers).
MAX_GROUPS = 8


def stage_widths(height: int, width: int, base: int) -> list[int]:
    """Channels of each encoder stage: base, 2 base, 4 base, 8 base, 8 base, ..."""
    return [base * min(2**i, MAX_WIDENING) for i in range(n_stages(height, width))]


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with the most groups up to :data:`MAX_GROUPS` that divide ``channels``."""
    groups = next(g for g in range(min(MAX_GROUPS, channels), 0, -1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


class ResidualBlock(nn.Module):
    """Pre-activation residual block: x + conv(act(norm(conv(act(norm(x)))))).

    ``stride=2`` halves the map (rounding up, as a 3x3 kernel with padding 1 does);
    a 1x1 convolution on the skip path matches the channels and stride when they change.
    """

    def __init__(self, n_in: int, n_out: int, stride: int = 1) -> None:
        super().__init__()
        self.branch = nn.Sequential(
            group_norm(n_in),
            nn.SiLU(),
            nn.Conv2d(n_in, n_out, 3, stride=stride, padding=1),
            group_norm(n_out),
            nn.SiLU(),
            nn.Conv2d(n_out, n_out, 3, padding=1),
        )
        self.skip: nn.Module = (
            nn.Identity() if n_in == n_out and stride == 1 else nn.Conv2d(n_in, n_out, 1, stride)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.branch(x)  # (batch, n_out, H / stride, W / stride)


class UpBlock(nn.Module):
    """Nearest-neighbour 2x upsampling, then a residual block (no checkerboard
    artefacts, unlike a stride-2 transposed convolution; Odena et al. 2016)."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.block = ResidualBlock(n_in, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(self.up(x))  # (batch, n_out, 2H, 2W)


class ResNetEncoder(nn.Module):
    """A 3x3 stem, a downsampling stage of ``blocks`` residual blocks per halving
    (the first of each stride 2), GroupNorm + SiLU, then dense layers ``hidden``."""

    def __init__(
        self, image_shape: tuple[int, ...], hidden: Sequence[int], channels_base: int, blocks: int
    ) -> None:
        super().__init__()
        channels, height, width = image_shape
        self.image_shape = tuple(image_shape)
        widths = stage_widths(height, width, channels_base)
        self.stem = nn.Conv2d(channels, widths[0], 3, padding=1)
        layers: list[nn.Module] = []
        for n_in, n_out in zip([widths[0], *widths[:-1]], widths, strict=True):
            layers.append(ResidualBlock(n_in, n_out, stride=2))
            layers += [ResidualBlock(n_out, n_out) for _ in range(blocks - 1)]
        layers += [group_norm(widths[-1]), nn.SiLU()]
        self.stages = nn.Sequential(*layers)
        grid_height, grid_width = _grid(height, width)
        self.dense = mlp_layers([widths[-1] * grid_height * grid_width, *hidden])
        self.out_features = hidden[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch_shape = x.shape[:-3]
        h = self.stages(self.stem(x.reshape(-1, *self.image_shape)))  # (batch, width, H', W')
        return self.dense(h.flatten(1)).reshape(*batch_shape, -1)  # (..., hidden[-1])


class ResNetDecoder(nn.Module):
    """Mirror of :class:`ResNetEncoder`: dense layers onto the smallest grid, per stage
    ``blocks - 1`` residual blocks and an :class:`UpBlock`, then GroupNorm + SiLU and a
    3x3 convolution to the likelihood's parameters, cropped to the image."""

    def __init__(
        self,
        image_shape: tuple[int, ...],
        hidden: Sequence[int],
        n_latent: int,
        channels_base: int,
        blocks: int,
    ) -> None:
        super().__init__()
        channels, height, width = image_shape
        self.image_shape = tuple(image_shape)
        # Each stage doubles; start from a grid that covers the image, then crop.
        self.grid = _grid(height, width)
        widths = list(reversed(stage_widths(height, width, channels_base)))
        self.width = widths[0]
        sizes = [n_latent, *reversed(hidden)]
        self.dense = nn.Sequential(
            mlp_layers(sizes),
            nn.Linear(sizes[-1], widths[0] * self.grid[0] * self.grid[1]),
        )
        layers: list[nn.Module] = []
        for n_in, n_out in zip(widths, [*widths[1:], widths[-1]], strict=True):
            layers += [ResidualBlock(n_in, n_in) for _ in range(blocks - 1)]
            layers.append(UpBlock(n_in, n_out))
        # No activation on the output: it is the likelihood's parameters (logits, mean).
        layers += [group_norm(widths[-1]), nn.SiLU(), nn.Conv2d(widths[-1], channels, 3, padding=1)]
        self.stages = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        batch_shape = z.shape[:-1]
        h = self.dense(z.reshape(-1, z.shape[-1])).unflatten(-1, (self.width, *self.grid))
        out = self.stages(h)[..., : self.image_shape[1], : self.image_shape[2]]
        return out.reshape(*batch_shape, *self.image_shape)  # (..., C, H, W)


class ResNetNetwork(Network):
    """Residual convolutions (pre-activation blocks, GroupNorm) both ways, images of 8x8 up.

    One stage per halving of the image down to about 8x8 (at least two) each way, as the
    conv network has; ``--channels-base`` and ``--blocks`` set its width and depth."""

    name = "resnet"
    options = (HIDDEN, CHANNELS_BASE, BLOCKS)

    @classmethod
    def check(cls, options: Mapping[str, Any], context: ModelContext) -> None:
        check_image(cls.title(), context)

    def build(self, context: ModelContext) -> Networks:
        hidden, base, blocks = (self.values[k] for k in ("hidden", "channels_base", "blocks"))
        return Networks(
            ResNetEncoder(context.shape, hidden, base, blocks),
            ResNetDecoder(context.shape, hidden, context.n_latent, base, blocks),
        )
