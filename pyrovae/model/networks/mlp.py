"""Fully connected encoder and decoder (Kingma & Welling 2014, "Auto-Encoding
Variational Bayes"), for data of any shape (images are flattened).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from pyrovae.model.context import ModelContext
from pyrovae.model.networks.base import HIDDEN, Network, Networks, n_elements


def mlp_layers(sizes: Sequence[int]) -> nn.Sequential:
    """Linear + ReLU layers through ``sizes``."""
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(n_in, n_out), nn.ReLU()]
    return nn.Sequential(*layers)


#: Builds the hidden layers through the given sizes (:func:`mlp_layers`, or the gated
#: network's :func:`~pyrovae.model.networks.gated.gated_layers`).
Layers = Callable[[Sequence[int]], nn.Sequential]


class MLPEncoder(nn.Module):
    """Flatten one data point, then ReLU layers (or ``layers``') of sizes ``hidden``."""

    def __init__(
        self, data_shape: tuple[int, ...], hidden: Sequence[int], layers: Layers = mlp_layers
    ) -> None:
        super().__init__()
        self.data_shape = tuple(data_shape)
        self.net = layers([n_elements(self.data_shape), *hidden])
        self.out_features = hidden[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(-len(self.data_shape)))  # (..., hidden[-1])


class MLPDecoder(nn.Module):
    """ReLU layers (or ``layers``') of sizes ``reversed(hidden)``, then a linear map to
    every element."""

    def __init__(
        self,
        data_shape: tuple[int, ...],
        hidden: Sequence[int],
        n_latent: int,
        layers: Layers = mlp_layers,
    ) -> None:
        super().__init__()
        self.data_shape = tuple(data_shape)
        widths = [n_latent, *reversed(hidden)]
        self.net = nn.Sequential(layers(widths), nn.Linear(widths[-1], n_elements(self.data_shape)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).unflatten(-1, self.data_shape)  # (..., *data_shape)


class MLPNetwork(Network):
    """Fully connected layers both ways (any data shape)."""

    name = "mlp"
    options = (HIDDEN,)

    def build(self, context: ModelContext) -> Networks:
        hidden = self.values["hidden"]
        return Networks(
            MLPEncoder(context.shape, hidden),
            MLPDecoder(context.shape, hidden, context.n_latent),
        )
