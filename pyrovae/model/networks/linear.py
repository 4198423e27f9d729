"""Affine maps both ways: with a Gaussian likelihood the model is probabilistic
PCA (Tipping & Bishop 1999), whose marginal likelihood and posterior are
closed form (see :mod:`pyrovae.model.ppca`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class LinearEncoder(nn.Module):
    """One affine map from the flattened image to ``hidden[-1]`` features."""

    def __init__(self, image_shape: tuple[int, int, int], hidden: Sequence[int]) -> None:
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.net = nn.Linear(image_shape[0] * image_shape[1] * image_shape[2], hidden[-1])
        self.out_features = hidden[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(-3))  # (..., hidden[-1])


class LinearDecoder(nn.Module):
    """x's mean = W z + b: the decoder of probabilistic PCA."""

    def __init__(self, image_shape: tuple[int, int, int], n_latent: int) -> None:
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.net = nn.Linear(n_latent, image_shape[0] * image_shape[1] * image_shape[2])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).unflatten(-1, self.image_shape)  # (..., C, H, W)
