"""The VAE as a pair of Pyro functions: ``model(x)`` for p(z) p(x|z) and
``guide(x)`` for the amortized q(z|x).

Kingma & Welling (2014), "Auto-Encoding Variational Bayes"; β-weighting from
Higgins et al. (2017), "β-VAE". The networks, likelihood, prior and guide are
looked up in their registries from a :class:`~pyrovae.config.ModelConfig`, so
this module never changes when one is added. Nothing here knows about epochs,
optimizers or files.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch import nn

from pyrovae.config import ModelConfig
from pyrovae.errors import ConfigError
from pyrovae.model.guides.amortized import AmortizedGuide
from pyrovae.model.guides.base import Guide
from pyrovae.model.likelihoods.base import LIKELIHOODS
from pyrovae.model.networks import build_networks
from pyrovae.model.priors.base import PRIORS
from pyrovae.sites import DATA_PLATE, LATENT, MODULE, OBS


class VAE(nn.Module):
    """Encoder, decoder, likelihood, prior and guide head of one VAE.

    Parameters
    ----------
    config
        The model config; ``config.image_shape`` must be set.

    Attributes
    ----------
    beta
        Weight of the latent site's log-densities in both model and guide,
        so that the ELBO's KL term is multiplied by it. Set by the trainer for
        KL warm-up; 1 gives the plain ELBO.

    Example
    -------
    >>> vae = VAE(ModelConfig(image_shape=(1, 8, 8), latent_dim=2))
    >>> elbo = pyro.infer.TraceMeanField_ELBO()
    >>> loss = elbo.differentiable_loss(vae.model, vae.guide, torch.zeros(5, 1, 8, 8))
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.image_shape is None:
            raise ConfigError("the model config has no image_shape; it is read from the data")
        self.config = config
        self.image_shape: tuple[int, int, int] = config.image_shape
        encoder, self.decoder = build_networks(
            config.arch, self.image_shape, config.hidden, config.latent_dim
        )
        self.likelihood = LIKELIHOODS.get(config.likelihood)(self.image_shape, config)
        self.prior = PRIORS.get(config.prior)(config.latent_dim, config)
        # The toolkit's one amortized guide (the encoder and a registered head),
        # which any Pyro model with a latent site in the data plate can use too.
        self.amortized_guide = AmortizedGuide(
            self.model, encoder, config, event_shape=(config.latent_dim,)
        )
        # Priors built on q(z|x) (the VampPrior) get it now that it exists.
        self.prior.attach_posterior(self.qz)
        self.beta = 1.0

    @property
    def n_latent(self) -> int:
        return self.config.latent_dim

    @property
    def encoder(self) -> nn.Module:
        """The network x -> h(x) that q(z|x) reads."""
        return self.amortized_guide.encoder

    @property
    def guide_net(self) -> Guide:
        """The registered guide head h(x) -> q(z|x)."""
        head = self.amortized_guide.head
        assert head is not None  # built in __init__
        return head

    def _latent_scale(self) -> AbstractContextManager[Any]:
        return nullcontext() if self.beta == 1.0 else poutine.scale(scale=self.beta)

    def qz(self, x: torch.Tensor) -> dist.TorchDistribution:
        """q(z|x) for a batch ``(batch, C, H, W)``."""
        return self.amortized_guide.qz(x)

    def px(self, z: torch.Tensor) -> dist.TorchDistribution:
        """p(x|z) for codes ``(..., n_latent)``."""
        return self.likelihood(self.decoder(z))

    def model(self, x: torch.Tensor) -> torch.Tensor:
        """p(z) p(x|z), observed at ``x`` ``(batch, C, H, W)``."""
        pyro.module(MODULE, self)
        with pyro.plate(DATA_PLATE, x.shape[0], dim=-1):
            with self._latent_scale():
                z = pyro.sample(LATENT, self.prior())  # (batch, n_latent)
            pyro.sample(OBS, self.px(z), obs=x)
        return z

    def guide(self, x: torch.Tensor) -> torch.Tensor:
        """q(z|x) from the encoder."""
        pyro.module(MODULE, self)
        with self._latent_scale():
            return self.amortized_guide.sample_latent(x)  # (batch, n_latent)

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0, mean: bool = True) -> torch.Tensor:
        """``n`` images ``(n, C, H, W)`` from z ~ p(z) (at ``temperature``), x ~ p(x|z).

        With ``mean`` the images are the likelihood's mean E[x|z] (smooth);
        without, a draw from p(x|z) (for Bernoulli: binary pixels).
        """
        px = self.px(self.prior.sample(n, temperature))
        return px.mean if mean else px.sample()

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, mean: bool = True) -> torch.Tensor:
        """Images decoded from one draw z ~ q(z|x) for each image of ``x``."""
        px = self.px(self.qz(x).sample())
        return px.mean if mean else px.sample()
