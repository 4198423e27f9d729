"""Affine maps both ways: with a Gaussian likelihood the model is probabilistic
PCA (Tipping & Bishop 1999), whose marginal likelihood and posterior are
closed form (see :mod:`pyrovae.model.ppca`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pyrovae.model.context import ModelContext
from pyrovae.model.networks.base import HIDDEN, Network, Networks, n_elements


class LinearEncoder(nn.Module):
    """One affine map from the flattened data point to ``hidden[-1]`` features."""

    def __init__(self, data_shape: tuple[int, ...], hidden: Sequence[int]) -> None:
        super().__init__()
        self.data_shape = tuple(data_shape)
        self.net = nn.Linear(n_elements(self.data_shape), hidden[-1])
        self.out_features = hidden[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(-len(self.data_shape)))  # (..., hidden[-1])


class LinearDecoder(nn.Module):
    """x's mean = W z + b: the decoder of probabilistic PCA."""

    def __init__(self, data_shape: tuple[int, ...], n_latent: int) -> None:
        super().__init__()
        self.data_shape = tuple(data_shape)
        self.net = nn.Linear(n_latent, n_elements(self.data_shape))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).unflatten(-1, self.data_shape)  # (..., *data_shape)


class LinearNetwork(Network):
    """Affine maps both ways: probabilistic PCA with a Gaussian likelihood."""

    name = "linear"
    options = (HIDDEN,)

    def build(self, context: ModelContext) -> Networks:
        return Networks(
            LinearEncoder(context.shape, self.values["hidden"]),
            LinearDecoder(context.shape, context.n_latent),
        )
