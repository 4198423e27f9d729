"""Gated fully connected encoder and decoder, the networks of Tomczak & Welling (2018,
"VAE with a VampPrior") behind its MNIST-sized figures: each hidden layer is
h = (W x + b) ⊙ sigmoid(V x + c), a gated linear unit (Dauphin et al. 2017), in place
of ReLU(W x + b). Their layers are ``--hidden 300,300``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pyrovae.model.context import ModelContext
from pyrovae.model.networks.base import HIDDEN, Network, Networks, n_elements


class GatedLinear(nn.Module):
    """(W x + b) ⊙ sigmoid(V x + c), with W and V stacked in one ``nn.Linear`` so that a
    layer is one matrix product; ``nn.functional.glu`` splits and gates its output."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.linear = nn.Linear(n_in, 2 * n_out)
        self.out_features = n_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.glu(self.linear(x), dim=-1)  # (..., n_out)


def gated_layers(sizes: Sequence[int]) -> nn.Sequential:
    """Gated linear layers through ``sizes``."""
    pairs = zip(sizes[:-1], sizes[1:], strict=True)
    return nn.Sequential(*(GatedLinear(n_in, n_out) for n_in, n_out in pairs))


class GatedEncoder(nn.Module):
    """Flatten one data point, then gated layers of sizes ``hidden``."""

    def __init__(self, data_shape: tuple[int, ...], hidden: Sequence[int]) -> None:
        super().__init__()
        self.data_shape = tuple(data_shape)
        self.net = gated_layers([n_elements(self.data_shape), *hidden])
        self.out_features = hidden[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(-len(self.data_shape)))  # (..., hidden[-1])


class GatedDecoder(nn.Module):
    """Gated layers of sizes ``reversed(hidden)``, then a linear map to every element."""

    def __init__(self, data_shape: tuple[int, ...], hidden: Sequence[int], n_latent: int) -> None:
        super().__init__()
        self.data_shape = tuple(data_shape)
        widths = [n_latent, *reversed(hidden)]
        self.net = nn.Sequential(
            gated_layers(widths), nn.Linear(widths[-1], n_elements(self.data_shape))
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).unflatten(-1, self.data_shape)  # (..., *data_shape)


class GatedNetwork(Network):
    """Gated fully connected layers both ways (any data shape)."""

    name = "gated"
    options = (HIDDEN,)

    def build(self, context: ModelContext) -> Networks:
        hidden = self.values["hidden"]
        return Networks(
            GatedEncoder(context.shape, hidden),
            GatedDecoder(context.shape, hidden, context.n_latent),
        )
