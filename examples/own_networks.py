"""The encoder and decoder of ``custom_network.py``, in a module of their own so that a
run can import them again (a class defined in the script itself lives in ``__main__``)."""

from __future__ import annotations

import torch
from torch import nn


class SmallEncoder(nn.Module):
    """(batch, 1, 8, 8) digits -> (batch, width) features."""

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.width = width
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ELU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SmallDecoder(nn.Module):
    """(batch, latent_dim) codes -> (batch, 1, 8, 8) Bernoulli logits."""

    def __init__(self, latent_dim: int = 4, width: int = 64) -> None:
        super().__init__()
        self.latent_dim, self.width = latent_dim, width
        self.net = nn.Sequential(
            nn.Linear(latent_dim, width), nn.ELU(), nn.Linear(width, 64), nn.Unflatten(1, (1, 8, 8))
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)
