"""Priors p(z), registered by name.

A prior is an ``nn.Module`` (so a learned prior trains with the rest of the
model) whose ``forward()`` returns a distribution with event shape
``(n_latent,)`` and empty batch shape; the data plate broadcasts it.
``sample(n, temperature)`` draws codes for ``pyrovae sample``.

The best prior for a given encoder is the aggregate posterior
q(z) = E_x q(z|x) ("ELBO surgery", Hoffman & Johnson 2016): the average KL
term splits into KL(q(z) || p(z)) plus the mutual information I(x; z), and
only the first depends on p. The learned priors get closer to q(z):

- ``normal``: N(0, I).
- ``mog``: a mixture of ``prior_components`` learned diagonal Gaussians.
- ``flow``: N(0, I) pushed through ``flows`` masked autoregressive layers
  (Papamakarios et al. 2017), a flow whose density is one network pass at any
  z and whose sampling is sequential (cheap: z is small).
- ``vamp``: the VampPrior (Tomczak & Welling 2018), the mixture
  (1/K) sum_k q(z | u_k) over ``prior_components`` learned pseudo-inputs u_k,
  evaluated with the VAE's own encoder and guide.

``temperature`` scales the spread of each prior's Gaussian part (the
components of ``mog`` and ``vamp``, the base of ``flow``), which concentrates
draws near the modes for ``temperature < 1``. Tempering is a capability a
prior declares (:attr:`Prior.temperable`): a prior without it is sampled at
temperature 1 only, and callers ask before they draw. The VampPrior has it
when its guide has it (:attr:`pyrovae.guides.Guide.temperable`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
import torch.nn.functional as F
from torch import nn

from pyrovae.config import ModelConfig
from pyrovae.errors import ConfigError
from pyrovae.guides import GUIDES, Guide
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


@PRIORS.register("normal")
class StandardNormalPrior(Prior):
    """N(0, I)."""

    temperable = True
    loc: torch.Tensor
    scale: torch.Tensor

    def __init__(self, n_latent: int, config: ModelConfig) -> None:
        super().__init__(n_latent, config)
        self.register_buffer("loc", torch.zeros(n_latent))
        self.register_buffer("scale", torch.ones(n_latent))

    def forward(self) -> dist.TorchDistribution:
        return dist.Normal(self.loc, self.scale).to_event(1)

    def sample(self, n: int, temperature: float = 1.0) -> torch.Tensor:
        return dist.Normal(self.loc, temperature * self.scale).to_event(1).sample((n,))


@PRIORS.register("mog")
class MixtureOfGaussiansPrior(Prior):
    """(sum_k pi_k N(mu_k, diag sigma_k^2)) with learned weights, means and scales."""

    min_scale = 1e-3
    temperable = True

    def __init__(self, n_latent: int, config: ModelConfig) -> None:
        super().__init__(n_latent, config)
        k = config.prior_components
        # Spread-out means so that the components do not start identical.
        self.locs = nn.Parameter(torch.randn(k, n_latent))  # (K, n_latent)
        # softplus(0.5413) = 1: unit scales at the start.
        self.raw_scales = nn.Parameter(torch.full((k, n_latent), 0.5413))
        self.logits = nn.Parameter(torch.zeros(k))

    def _mixture(self, temperature: float = 1.0) -> dist.TorchDistribution:
        scales = temperature * (F.softplus(self.raw_scales) + self.min_scale)  # (K, n_latent)
        components = dist.Normal(self.locs, scales).to_event(1)  # batch (K,)
        return dist.MixtureSameFamily(dist.Categorical(logits=self.logits), components)

    def forward(self) -> dist.TorchDistribution:
        return self._mixture()

    def sample(self, n: int, temperature: float = 1.0) -> torch.Tensor:
        return self._mixture(temperature).sample((n,))


@PRIORS.register("flow")
class FlowPrior(Prior):
    """N(0, I) through ``config.flows`` masked autoregressive (MAF) layers.

    Each layer is the inverse of Pyro's
    :class:`~pyro.distributions.transforms.AffineAutoregressive`, so that
    log p(z) of a code from the guide costs one pass per layer; the order of
    the coordinates is reversed between layers.
    """

    temperable = True
    loc: torch.Tensor
    scale: torch.Tensor
    reverse: torch.Tensor

    def __init__(self, n_latent: int, config: ModelConfig) -> None:
        super().__init__(n_latent, config)
        self.layers = nn.ModuleList(
            T.AffineAutoregressive(
                pyro_arn(n_latent, list(config.flow_hidden)),
                # Clipping keeps a layer from collapsing or exploding a
                # direction early in training.
                log_scale_min_clip=-3.0,
                log_scale_max_clip=3.0,
            )
            for _ in range(config.flows)
        )
        self.register_buffer("loc", torch.zeros(n_latent))
        self.register_buffer("scale", torch.ones(n_latent))
        self.register_buffer("reverse", torch.arange(n_latent - 1, -1, -1))

    def _flow(self, temperature: float = 1.0) -> dist.TorchDistribution:
        base = dist.Normal(self.loc, temperature * self.scale).to_event(1)
        transforms: list[T.Transform] = []
        for i, layer in enumerate(self.layers):
            if i > 0:
                transforms.append(T.Permute(self.reverse))
            transforms.append(cast(T.AffineAutoregressive, layer).inv)
        return dist.TransformedDistribution(base, transforms)

    def forward(self) -> dist.TorchDistribution:
        return self._flow()

    def sample(self, n: int, temperature: float = 1.0) -> torch.Tensor:
        return self._flow(temperature).sample((n,))


def pyro_arn(n_latent: int, hidden: list[int]) -> nn.Module:
    """A MADE network in the natural order (the flow reverses it between layers)."""
    from pyro.nn import AutoRegressiveNN

    return AutoRegressiveNN(
        n_latent, hidden, permutation=cast(torch.LongTensor, torch.arange(n_latent))
    )


@PRIORS.register("vamp")
class VampPrior(Prior):
    """p(z) = (1/K) sum_k q(z | u_k) over learned pseudo-inputs u_k (Tomczak & Welling 2018).

    The pseudo-inputs are images in (0, 1) (a sigmoid of free parameters).
    q is the VAE's own encoder and guide, handed over with
    :meth:`attach_posterior` after the VAE is built: the prior keeps a plain
    reference to it rather than the VAE as a submodule, which would make the
    module tree circular.

    Its components are q(z|u_k), so it can be tempered exactly when the
    guide ``config.guide`` can (:attr:`pyrovae.guides.Guide.temperable`).
    """

    def __init__(self, n_latent: int, config: ModelConfig) -> None:
        super().__init__(n_latent, config)
        if config.image_shape is None:
            raise ValueError("the VampPrior needs config.image_shape")
        shape = (config.prior_components, *config.image_shape)
        self.raw_inputs = nn.Parameter(torch.randn(shape))  # (K, C, H, W)
        self._qz: Posterior | None = None
        self._guide: type[Guide] = GUIDES.get(config.guide)
        self.temperable = self._guide.temperable

    def attach_posterior(self, qz: Posterior) -> None:
        self._qz = qz

    def pseudo_inputs(self) -> torch.Tensor:
        """u_k, ``(K, C, H, W)`` in (0, 1)."""
        return torch.sigmoid(self.raw_inputs)

    def _mixture(self, temperature: float = 1.0) -> dist.TorchDistribution:
        if self._qz is None:
            raise RuntimeError("VampPrior used before attach_posterior(qz)")
        components = self._qz(self.pseudo_inputs())  # batch (K,), event (n_latent,)
        if temperature != 1.0:
            components = self._guide.temper(components, temperature)
        k = components.batch_shape[0]
        weights = dist.Categorical(logits=torch.zeros(k, device=self.raw_inputs.device))
        return _BroadcastMixture(weights, components)

    def forward(self) -> dist.TorchDistribution:
        return self._mixture()

    def sample(self, n: int, temperature: float = 1.0) -> torch.Tensor:
        self.check_temperable(temperature)
        return self._mixture(temperature).sample((n,))


class _BroadcastMixture(dist.MixtureSameFamily):
    """A mixture that hands its components codes already expanded to ``(..., K, n)``.

    Flow components with context-dependent layers (an IAF conditioned on
    h(u_k)) invert only inputs whose batch shape matches their context's, not
    the ``(..., 1, n)`` that :class:`~torch.distributions.MixtureSameFamily`
    passes on.
    """

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        z = self._pad(value)  # (..., 1, n_latent)
        k = self.component_distribution.batch_shape[-1]
        z = z.expand(*z.shape[:-2], k, z.shape[-1])  # (..., K, n_latent)
        log_prob_z = self.component_distribution.log_prob(z)  # (..., K)
        log_weights = torch.log_softmax(self.mixture_distribution.logits, dim=-1)
        return torch.logsumexp(log_prob_z + log_weights, dim=-1)  # (...)
