"""The sparsity penalty of sparse autoencoders on the encoder's hidden activations.

Each hidden unit j should be active for a small share ρ of the data: with
ρ̂_j the unit's mean activation over a batch, the penalty is
Σ_j KL(ρ ‖ ρ̂_j) = Σ_j ρ log(ρ/ρ̂_j) + (1-ρ) log((1-ρ)/(1-ρ̂_j)), the KL of two
Bernoulli distributions (Ng 2011, "Sparse autoencoder", CS294A lecture notes).

The activations must lie in [0, 1]. The encoders' features h(x) are ReLU
outputs in [0, ∞), where a logistic sigmoid could not go below 1/2; they are
squashed with tanh(max(h, 0)) = 2σ(2h) - 1 on [0, 1) instead (0 stays 0, so an
inactive unit counts as inactive), which is the identity's near neighbour for
small h and a sigmoid for large ones.

Example
-------
>>> penalty = SparsityPenalty(rho=0.05, weight=3.0)
>>> kl = penalty.kl(h)  # h: (batch, n_hidden) encoder features; a scalar
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pyrovae.errors import ConfigError

#: ρ̂ is kept this far inside (0, 1), so that the KL stays finite.
EPS = 1e-6


def squash(h: torch.Tensor) -> torch.Tensor:
    """Hidden activations in [0, 1): tanh of their positive part."""
    return torch.tanh(h.clamp(min=0.0))


def mean_activation(h: torch.Tensor) -> torch.Tensor:
    """ρ̂: each hidden unit's mean squashed activation over the batch ``(n_hidden,)``."""
    return squash(h).flatten(0, -2).mean(0)


def bernoulli_kl(rho: float, rho_hat: torch.Tensor) -> torch.Tensor:
    """Σ_j KL(Bernoulli(ρ) ‖ Bernoulli(ρ̂_j)), a scalar."""
    rho_hat = rho_hat.clamp(EPS, 1.0 - EPS)
    return (
        rho * (math.log(rho) - torch.log(rho_hat))
        + (1.0 - rho) * (math.log(1.0 - rho) - torch.log1p(-rho_hat))
    ).sum()


@dataclass(frozen=True)
class SparsityPenalty:
    """``weight`` × Σ_j KL(``rho`` ‖ ρ̂_j) per data point, on the encoder's features.

    Parameters
    ----------
    rho
        Target mean activation of each hidden unit, in (0, 1).
    weight
        Weight of the penalty against the per-data-point loss.
    """

    rho: float
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not (isinstance(self.rho, (int, float)) and 0.0 < self.rho < 1.0):
            raise ConfigError(f"--sparsity must be in (0, 1), e.g. 0.05; got {self.rho!r}")
        if not (isinstance(self.weight, (int, float)) and math.isfinite(self.weight)):
            raise ConfigError(f"--sparsity-weight must be a number, got {self.weight!r}")
        if self.weight <= 0:
            raise ConfigError(f"--sparsity-weight must be positive, got {self.weight!r}")

    def kl(self, h: torch.Tensor) -> torch.Tensor:
        """Σ_j KL(ρ ‖ ρ̂_j) of the features ``h`` ``(batch, n_hidden)``."""
        return bernoulli_kl(self.rho, mean_activation(h))


@contextmanager
def recorded_outputs(module: nn.Module) -> Iterator[list[torch.Tensor]]:
    """The outputs of every call of ``module`` inside the block, in a list, as they
    are made (with their graph: a penalty on them trains the module)."""
    outputs: list[torch.Tensor] = []

    def keep(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        outputs.append(output)

    handle = module.register_forward_hook(keep)
    try:
        yield outputs
    finally:
        handle.remove()
