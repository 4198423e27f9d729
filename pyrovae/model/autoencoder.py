"""A deterministic autoencoder with the VAE's networks and likelihood, for comparing
the two on the same data, reconstructions and features (``--model ae``).

The code is z = f(x), the mean of the VAE's Gaussian guide head on the
encoder's features, and the loss is the likelihood's negative log-likelihood
-log p(x|f(x)) (Hinton & Salakhutdinov 2006; with ``--corrupt``, the denoising
autoencoder of Vincent et al. 2008). In Pyro's terms it is the VAE's model
with a flat, improper "prior" on z (log density 0) and a Delta guide at f(x):
the ELBO of that pair is exactly log p(x|f(x)) (KL term 0), so the same
training step, objectives and ELBO reports serve both kinds, and the test
"ELBO" of an autoencoder is its reconstruction log-likelihood.

An autoencoder has no prior: :meth:`Autoencoder.sample` and the metrics built
on p(z) (importance-sampled log p(x), ELBO surgery, inference gaps) are a
:class:`~pyrovae.errors.ConfigError`; its :attr:`~pyrovae.model.vae.VAE.has_prior`
says so to the reports.
"""

from __future__ import annotations

from typing import ClassVar

import pyro
import pyro.distributions as dist
import torch
from torch.distributions import constraints

from pyrovae.config import ModelConfig
from pyrovae.errors import ConfigError
from pyrovae.model.context import ModelContext
from pyrovae.model.networks.base import Networks
from pyrovae.model.priors.base import Prior
from pyrovae.model.vae import VAE
from pyrovae.sites import DATA_PLATE, LATENT, MODULE

#: The message for everything that needs a prior.
NO_PRIOR = "an autoencoder (--model ae) has no prior p(z)"


class FlatPrior(Prior):
    """The improper uniform "prior" on R^n_latent of an autoencoder: log density 0,
    nothing to draw. Not a registered component (``--prior`` cannot choose it)."""

    def forward(self) -> dist.TorchDistribution:
        return dist.ImproperUniform(constraints.real, (), (self.n_latent,))

    def sample(self, n: int, temperature: float = 1.0) -> torch.Tensor:
        raise ConfigError(f"{NO_PRIOR} to sample from: train a VAE (--model vae) to sample")


class Autoencoder(VAE):
    """z = f(x), the guide head's mean; trained on -log p(x|f(x)).

    Parameters
    ----------
    config
        The model config, of kind ``"ae"``; its guide must be the Gaussian
        ``normal`` (the code is its mean) and its prior the default ``normal``
        (unused: an autoencoder has none).
    modules
        As for :class:`~pyrovae.model.vae.VAE`.
    """

    has_prior: ClassVar[bool] = False

    def __init__(self, config: ModelConfig, *, modules: Networks | None = None) -> None:
        self.check_config(config)
        super().__init__(config, modules=modules)
        self.prior = FlatPrior(ModelContext(data_shape=self.data_shape, n_latent=self.n_latent))

    @classmethod
    def check_config(cls, config: ModelConfig) -> None:
        """Refuse a guide other than ``normal`` (the code is its mean) and any prior but
        the default (an autoencoder has none), with a :class:`~pyrovae.errors.ConfigError`."""
        if config.guide != "normal":
            raise ConfigError(
                f"--model ae encodes with the mean of the normal guide, not {config.guide!r}: "
                "leave out --guide"
            )
        if config.prior != "normal":
            raise ConfigError(f"{NO_PRIOR}: leave out --prior {config.prior}")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The codes f(x) ``(batch, n_latent)``."""
        return super().qz(x).mean

    def qz(self, x: torch.Tensor) -> dist.TorchDistribution:
        """The point mass at f(x), as q(z|x) (batch ``(batch,)``, event ``(n_latent,)``)."""
        return dist.Delta(self.encode(x), event_dim=1)

    def guide(
        self,
        x: torch.Tensor | None = None,
        *,
        beta: float = 1.0,
        batch_size: int | None = None,
        observe: bool = True,
    ) -> torch.Tensor:
        """The Delta guide at f(x) (``beta`` has nothing to weight: the KL term is 0)."""
        if x is None:
            raise ConfigError(f"the encoder needs images x: {NO_PRIOR} to draw from")
        pyro.module(MODULE, self)
        with pyro.plate(DATA_PLATE, x.shape[0], dim=-1):
            return pyro.sample(LATENT, self.qz(x))  # (batch, n_latent)

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0, mean: bool = True) -> torch.Tensor:
        """Refused: an autoencoder has no prior to draw codes from."""
        return self.px(self.prior.sample(n, temperature)).mean
