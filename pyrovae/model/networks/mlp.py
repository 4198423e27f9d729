"""Fully connected encoder and decoder (Kingma & Welling 2014, "Auto-Encoding
Variational Bayes").
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def mlp_layers(sizes: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(n_in, n_out), nn.ReLU()]
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    """Flatten the image, then ReLU layers of sizes ``hidden``."""

    def __init__(self, image_shape: tuple[int, int, int], hidden: Sequence[int]) -> None:
        super().__init__()
        self.image_shape = tuple(image_shape)
        n_pixels = image_shape[0] * image_shape[1] * image_shape[2]
        self.net = mlp_layers([n_pixels, *hidden])
        self.out_features = hidden[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(-3))  # (..., hidden[-1])


class MLPDecoder(nn.Module):
    """ReLU layers of sizes ``reversed(hidden)``, then a linear map to every pixel."""

    def __init__(
        self, image_shape: tuple[int, int, int], hidden: Sequence[int], n_latent: int
    ) -> None:
        super().__init__()
        self.image_shape = tuple(image_shape)
        n_pixels = image_shape[0] * image_shape[1] * image_shape[2]
        widths = [n_latent, *reversed(hidden)]
        self.net = nn.Sequential(mlp_layers(widths), nn.Linear(widths[-1], n_pixels))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).unflatten(-1, self.image_shape)  # (..., C, H, W)
