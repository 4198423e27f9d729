"""The contract of a prior p(z).

The best prior for a given encoder is the aggregate posterior
q(z) = E_x q(z|x) ("ELBO surgery", Hoffman & Johnson 2016): the average KL
term splits into KL(q(z) || p(z)) plus the mutual information I(x; z), and
only the first depends on p. The learned priors get closer to q(z).
"""

from __future__ import annotations

from collections.abc import Callable

import pyro.distributions as dist
import torch
from torch import nn

from pyrovae.config import ModelConfig
from pyrovae.errors import ConfigError
from pyrovae.registry import Registry

PRIORS: Registry[type[Prior]] = Registry("prior")

#: q(z|x) for a batch of images: what the VAE hands a prior that needs its guide.
Posterior = Callable[[torch.Tensor], dist.TorchDistribution]


class Prior(nn.Module):
    """Base class of priors over ``n_latent``-dimensional codes.

    A subclass implements :meth:`forward`; one that can scale its spread sets
    :attr:`temperable` and overrides :meth:`sample` to honour ``temperature``.
    """

    #: Whether :meth:`sample` can draw at a temperature other than 1.
    temperable: bool = False

    def __init__(self, n_latent: int, config: ModelConfig) -> None:
        super().__init__()
        self.n_latent = n_latent

    def forward(self) -> dist.TorchDistribution:
        raise NotImplementedError

    def sample(self, n: int, temperature: float = 1.0) -> torch.Tensor:
        """``n`` codes ``(n, n_latent)``; ``temperature`` < 1 draws nearer the modes.

        This default draws from :meth:`forward` and refuses any temperature
        but 1 with a :class:`~pyrovae.errors.ConfigError`.
        """
        self.check_temperable(temperature)
        return self().sample((n,))

    def check_temperable(self, temperature: float) -> None:
        """Raise a :class:`~pyrovae.errors.ConfigError` unless it can draw at ``temperature``."""
        if temperature != 1.0 and not self.temperable:
            raise ConfigError(
                f"prior {type(self).__name__} cannot be sampled at a temperature other than 1"
            )

    def attach_posterior(self, qz: Posterior) -> None:
        """Receive the VAE's q(z|x) once the VAE is built; only the VampPrior uses it."""
