"""The contract of a guide head: encoder features h(x) -> q(z|x)."""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import nn

from pyrovae.config import ModelConfig
from pyrovae.errors import ConfigError
from pyrovae.registry import Registry

GUIDES: Registry[type[Guide]] = Registry("guide")


class Guide(nn.Module):
    """Base class: ``forward(h) -> q(z|x)``."""

    #: False when log q(z|x) can only be evaluated at z the guide itself just
    #: drew (planar and radial flows have no closed-form inverse).
    scores_any_z: bool = True
    #: Whether :meth:`temper` can scale the spread of q(z|x): the VampPrior,
    #: whose components are q(z|u_k), can be sampled at a temperature only then.
    temperable: bool = False

    def __init__(self, n_hidden: int, n_latent: int, config: ModelConfig) -> None:
        super().__init__()
        self.n_hidden = n_hidden
        self.n_latent = n_latent

    def forward(self, h: torch.Tensor) -> dist.TorchDistribution:
        raise NotImplementedError

    @classmethod
    def temper(cls, qz: dist.TorchDistribution, temperature: float) -> dist.TorchDistribution:
        """``qz`` (from :meth:`forward`) with its spread scaled by ``temperature``.

        Only guides that set :attr:`temperable` implement it; the others refuse
        with a :class:`~pyrovae.errors.ConfigError`.
        """
        raise ConfigError(
            f"guide {cls.__name__} cannot be tempered: its q(z|x) has no spread "
            "to scale; sample at temperature 1"
        )


def tempered_gaussian(qz: dist.TorchDistribution, temperature: float) -> dist.TorchDistribution:
    """``qz`` with the scale of its Gaussian part multiplied by ``temperature``.

    ``qz`` is a Normal, possibly made :class:`~pyro.distributions.Independent`
    and pushed through transforms (a flow); the transforms are kept.
    """
    if isinstance(qz, dist.TransformedDistribution):
        base = tempered_gaussian(qz.base_dist, temperature)
        return dist.TransformedDistribution(base, qz.transforms)
    if isinstance(qz, dist.Independent):
        base = tempered_gaussian(qz.base_dist, temperature)
        return base.to_event(qz.reinterpreted_batch_ndims)
    if isinstance(qz, dist.Normal):
        return dist.Normal(qz.loc, temperature * qz.scale)
    raise TypeError(f"tempered_gaussian: {type(qz).__name__} has no Gaussian part")
