"""The VAE as a pair of Pyro functions: ``model(x)`` for p(z) p(x|z) and
``guide(x)`` for the amortized q(z|x), and log p(x, z) for a batch.

Kingma & Welling (2014), "Auto-Encoding Variational Bayes"; β-weighting from
Higgins et al. (2017), "β-VAE". The networks, likelihood, prior and guide are
resolved from a :class:`~pyrovae.config.ModelConfig` by :mod:`pyrovae.model.spec`
(installed components and plugins alike), so this module never changes when
one is added. Nothing here knows about epochs, optimizers or files: β is an
argument of the model and guide, which Pyro's ELBOs pass through:
``elbo.differentiable_loss(vae.model, vae.guide, x, beta=0.5)``.

Predictive
----------
:class:`pyro.infer.Predictive` draws from the model as for any Pyro model:

>>> prior = Predictive(vae.model, num_samples=100)(None, batch_size=8)
>>> prior["z"].shape, prior["x"].shape          # (100, 8, n_latent), (100, 8, C, H, W)
>>> posterior = Predictive(vae.model, guide=vae.guide, num_samples=100)(x, observe=False)
>>> posterior["x"]                              # x ~ p(x|z), z ~ q(z|x): replicated data

With ``observe=False`` the images only feed the guide and the model draws its
site ``"x"``; with the default ``observe=True`` the site is conditioned on
them, and Predictive hands them back unchanged, as it does any observed site.

Missing values
--------------
A VAE built with ``config.missing`` (a run trained on data holding NaN) takes
NaN in ``x`` as missing: the site ``"x"`` scores the observed values only
(:meth:`Likelihood.masked <pyrovae.model.likelihoods.base.Likelihood.masked>`)
and the encoder reads the values and their mask
(:mod:`pyrovae.model.networks.observed`). Any VAE scores incomplete data given
an explicit mask: ``vae.log_joint(x, z, mask)``. Without NaN and without
``config.missing`` nothing of this runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any, ClassVar

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch import nn

from pyrovae.config import ModelConfig
from pyrovae.errors import ConfigError
from pyrovae.model.context import ModelContext
from pyrovae.model.guides.amortized import AmortizedGuide
from pyrovae.model.guides.base import Guide
from pyrovae.model.likelihoods.base import Likelihood
from pyrovae.model.networks.base import Network, Networks
from pyrovae.model.networks.observed import ObservedInput, with_mask_shape
from pyrovae.model.priors.base import Prior
from pyrovae.model.spec import resolve
from pyrovae.sites import DATA_PLATE, LATENT, MODULE, OBS


def _latent_scale(beta: float) -> AbstractContextManager[Any]:
    """β-weighting of the latent site's log-densities, in model and guide alike, so
    that the ELBO's KL term is multiplied by β (nothing to do at β = 1)."""
    return nullcontext() if beta == 1.0 else poutine.scale(scale=beta)


class VAE(nn.Module):
    """Encoder, decoder, likelihood, prior and guide head of one VAE.

    Parameters
    ----------
    config
        The model config; ``config.data_shape`` must be set.
    modules
        An encoder and a decoder to use as they are, for a network component
        that takes them (``module``: your own ``nn.Module``s).

    Example
    -------
    >>> vae = VAE(ModelConfig(data_shape=(1, 8, 8), latent_dim=2))
    >>> elbo = pyro.infer.TraceMeanField_ELBO()
    >>> x = torch.zeros(5, 1, 8, 8)
    >>> loss = elbo.differentiable_loss(vae.model, vae.guide, x)
    >>> warm = elbo.differentiable_loss(vae.model, vae.guide, x, beta=0.1)  # KL x 0.1
    """

    #: Whether p(z) is a distribution to sample and score (not so for an autoencoder,
    #: :mod:`pyrovae.model.autoencoder`): sampling and log p(x) need it.
    has_prior: ClassVar[bool] = True

    @classmethod
    def check_config(cls, config: ModelConfig) -> None:
        """Refuse, before any data is read, a config this kind of model cannot be built from
        (a :class:`~pyrovae.errors.ConfigError`); its components check themselves."""

    def __init__(self, config: ModelConfig, *, modules: Networks | None = None) -> None:
        super().__init__()
        if config.data_shape is None:
            raise ConfigError("the model config has no data_shape; it is read from the data")
        self.config = config
        spec = resolve(config)
        context, options = spec.context, spec.options
        classes: Mapping[str, Any] = spec.classes
        self.data_shape: tuple[int, ...] = tuple(config.data_shape)
        network = classes["network"](**options["network"], **_given(modules))
        encoder, self.decoder = network.build(context)
        if config.missing:
            encoder = _observed_encoder(network, context)
        self.likelihood: Likelihood = classes["likelihood"](context, **options["likelihood"])
        self.prior: Prior = classes["prior"](context, **options["prior"])
        # The toolkit's one amortized guide (the encoder and a guide head), which
        # any Pyro model with a latent site in the data plate can use too.
        self.amortized_guide = AmortizedGuide(
            self.model,
            encoder,
            classes["guide"],
            options["guide"],
            event_shape=(config.latent_dim,),
            context=context,
        )
        if self.prior.needs_posterior:  # the VampPrior is built on q(z|x)
            self.prior.attach_posterior(self.qz)

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

    def qz(self, x: torch.Tensor) -> dist.TorchDistribution:
        """q(z|x) for a batch ``(batch, C, H, W)``."""
        return self.amortized_guide.qz(x)

    def px(self, z: torch.Tensor) -> dist.TorchDistribution:
        """p(x|z) for codes ``(..., n_latent)``."""
        return self.likelihood(self.decoder(z))

    @property
    def missing(self) -> bool:
        """Whether this VAE was trained on incomplete data (NaN in ``x`` is missing)."""
        return bool(self.config.missing)

    def observed(
        self, x: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``x`` with missing values set to 0, and the mask of observed values.

        ``mask`` given: the values where it is False are missing. Otherwise NaN
        is missing where :attr:`missing`; else ``(x, None)``, at no cost.
        """
        if mask is None:
            if not self.missing:
                return x, None
            mask = ~torch.isnan(x)
        return torch.where(mask, x, 0.0), mask

    def px_observed(self, z: torch.Tensor, mask: torch.Tensor | None) -> dist.TorchDistribution:
        """p(x|z) scoring only the values where ``mask`` is True (all for ``None``)."""
        px = self.px(z)
        return px if mask is None else self.likelihood.masked(px, mask)

    def log_px(
        self, x: torch.Tensor, z: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """log p(x_obs|z) ``(..., batch)``: log p(x|z) over the observed values (see
        :meth:`observed`); log p(x|z) itself for complete data."""
        x, mask = self.observed(x, mask)
        return self.px_observed(z, mask).log_prob(x)

    def log_joint(
        self, x: torch.Tensor, z: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """log p(z) + log p(x_obs|z) for codes ``z`` ``(..., batch, n_latent)`` of the images
        ``x`` ``(batch, C, H, W)``: ``(..., batch)``.

        The one definition of the joint density that importance sampling, PSIS,
        NUTS and the per-point fits use; missing values as :meth:`log_px`.
        """
        return self.prior().log_prob(z) + self.log_px(x, z, mask)

    def model(
        self,
        x: torch.Tensor | None = None,
        *,
        beta: float = 1.0,
        batch_size: int | None = None,
        observe: bool = True,
    ) -> torch.Tensor:
        """p(z) p(x|z) over a batch: z ~ p(z), then x ~ p(x|z), observed at ``x``.

        Parameters
        ----------
        x
            Images ``(batch, C, H, W)``, or ``None`` to draw ``batch_size`` of them
            (prior predictive).
        beta
            Weight of the latent site (β-VAE, KL warm-up); 1 is the plain model.
        batch_size
            Data points to draw when ``x`` is ``None`` (default 1); with ``x``,
            ``None`` or its length.
        observe
            Condition the site ``"x"`` on ``x``; ``False`` draws it, ``x`` then
            only sets the batch (and feeds the guide: posterior predictive).

        Returns
        -------
        torch.Tensor
            The codes z ``(batch, n_latent)``.
        """
        pyro.module(MODULE, self)
        n = _batch_size(x, batch_size)
        with pyro.plate(DATA_PLATE, n, dim=-1):
            with _latent_scale(beta):
                z = pyro.sample(LATENT, self.prior())  # (batch, n_latent)
            x, mask = (None, None) if x is None else self.observed(x)
            pyro.sample(OBS, self.px_observed(z, mask), obs=x if observe else None)
        return z

    def guide(
        self,
        x: torch.Tensor | None = None,
        *,
        beta: float = 1.0,
        batch_size: int | None = None,
        observe: bool = True,
    ) -> torch.Tensor:
        """q(z|x) from the encoder; it takes the model's arguments (as Pyro guides do)
        and needs the images ``x``."""
        if x is None:
            raise ConfigError(
                "the guide q(z|x) needs images x; for draws from the prior, "
                "run the model without a guide"
            )
        _batch_size(x, batch_size)
        pyro.module(MODULE, self)
        with _latent_scale(beta):
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


def _observed_encoder(network: Network, context: ModelContext) -> ObservedInput:
    """The encoder of a VAE for incomplete data: it reads the values and their mask
    where the network builds for any shape, the zero-filled values otherwise."""
    shape = context.shape
    if not type(network).builds_any_shape:
        return ObservedInput(network.build(context).encoder, shape, mask_channels=False)
    wider = dataclasses.replace(context, data_shape=with_mask_shape(shape))
    return ObservedInput(network.build(wider).encoder, shape, mask_channels=True)


def _given(modules: Networks | None) -> dict[str, Networks]:
    """The ``modules`` keyword for a network component, when the caller gave modules."""
    return {} if modules is None else {"modules": modules}


def _batch_size(x: torch.Tensor | None, batch_size: int | None) -> int:
    """The number of data points of a call of the model or guide."""
    if x is None:
        return 1 if batch_size is None else batch_size
    if batch_size is not None and batch_size != x.shape[0]:
        raise ConfigError(f"batch_size={batch_size} but x holds {x.shape[0]} images")
    return x.shape[0]
