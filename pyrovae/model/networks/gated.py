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
from pyrovae.model.networks.base import HIDDEN, Network, Networks
from pyrovae.model.networks.mlp import MLPDecoder, MLPEncoder


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


class GatedNetwork(Network):
    """Gated fully connected layers both ways (any data shape): the ``mlp`` network's
    encoder and decoder with gated layers."""

    name = "gated"
    options = (HIDDEN,)

    def build(self, context: ModelContext) -> Networks:
        hidden = self.values["hidden"]
        return Networks(
            MLPEncoder(context.shape, hidden, layers=gated_layers),
            MLPDecoder(context.shape, hidden, context.n_latent, layers=gated_layers),
        )
