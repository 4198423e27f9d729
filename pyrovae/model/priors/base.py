"""The contract of a prior p(z).

A prior is an ``nn.Module`` (so a learned prior trains with the rest of the
model) and a :class:`~pyrovae.components.Component`. ``forward()`` returns a
distribution with event shape ``(n_latent,)`` and empty batch shape (the data
plate broadcasts it); ``sample(n, temperature)`` draws codes for
``pyrovae sample``. Installed priors are found under the entry-point group
``pyrovae.priors``.

The best prior for a given encoder is the aggregate posterior
q(z) = E_x q(z|x) ("ELBO surgery", Hoffman & Johnson 2016): the average KL
term splits into KL(q(z) || p(z)) plus the mutual information I(x; z), and
only the first depends on p. The learned priors get closer to q(z).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import pyro.distributions as dist
import torch
from torch import nn

from pyrovae.components import Component, Registry, require
from pyrovae.model.context import ModelContext

PRIORS: Registry[type[Prior]] = Registry("prior")

#: q(z|x) for a batch of data points: what the VAE hands a prior that needs its guide.
Posterior = Callable[[torch.Tensor], dist.TorchDistribution]


class Prior(nn.Module, Component):
    """Base class of priors over ``n_latent``-dimensional codes.

    A subclass implements :meth:`forward`; one that can scale its spread sets
    :attr:`temperable` and overrides :meth:`sample` to honour ``temperature``.
    """

    kind: ClassVar[str] = "prior"
    #: Whether :meth:`sample` can draw at a temperature other than 1.
    temperable: ClassVar[bool] = False
    #: Whether the prior is built on the VAE's own q(z|x) (handed over with
    #: :meth:`attach_posterior` once the VAE exists).
    needs_posterior: ClassVar[bool] = False

    def __init__(self, context: ModelContext, **options: object) -> None:
        super().__init__()
        self.n_latent = context.n_latent

    @property
    def input_range(self) -> tuple[float, float] | None:
        """An interval the data must lie in for this prior to fit them (a VampPrior's
        bounded pseudo-inputs); ``None``: no bound, as for a prior on z alone."""
        return None

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
        if temperature != 1.0:
            require(self, "temperable", "sampling at a temperature other than 1")

    def attach_posterior(self, qz: Posterior) -> None:
        """Receive the VAE's q(z|x) once the VAE is built (priors that set
        :attr:`needs_posterior`)."""
