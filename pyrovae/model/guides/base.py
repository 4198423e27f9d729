"""The contract of a guide head: encoder features h(x) -> q(z|x).

A guide head is an ``nn.Module`` and a :class:`~pyrovae.components.Component`
that maps the encoder's features ``(batch, n_features)`` to a distribution
over z with batch shape ``(batch,)`` and event shape ``(n_latent,)``.
Installed guides are found under the entry-point group ``pyrovae.guides``.
"""

from __future__ import annotations

from typing import ClassVar

import pyro.distributions as dist
import torch
from torch import nn

from pyrovae.components import Component, Registry, require
from pyrovae.model.context import ModelContext

GUIDES: Registry[type[Guide]] = Registry("guide")


class Guide(nn.Module, Component):
    """Base class: ``forward(h) -> q(z|x)``.

    Parameters
    ----------
    context
        The data shape and latent size of the model.
    n_features
        The size of the encoder's features h(x).
    **options
        The values of the options the subclass declares.
    """

    kind: ClassVar[str] = "guide"
    #: False when log q(z|x) can only be evaluated at z the guide itself just
    #: drew (planar and radial flows have no closed-form inverse): the VampPrior
    #: and ELBO surgery need it.
    scores_any_z: ClassVar[bool] = True
    #: Whether :meth:`temper` can scale the spread of q(z|x): the VampPrior,
    #: whose components are q(z|u_k), can be sampled at a temperature only then.
    temperable: ClassVar[bool] = False
    #: Whether q's ``mean`` has a closed form (else it is estimated from draws).
    has_closed_form_mean: ClassVar[bool] = False
    #: The family of per-point q* (:mod:`pyrovae.inference.local`) that the inference
    #: gaps fit for this guide: its own family where one is implemented (``normal``
    #: for the mean-field guide), else the flexible ``iaf``.
    local_family: ClassVar[str] = "iaf"

    def __init__(self, context: ModelContext, n_features: int, **options: object) -> None:
        super().__init__()
        self.n_features = n_features
        self.n_latent = context.n_latent

    def forward(self, h: torch.Tensor) -> dist.TorchDistribution:
        raise NotImplementedError

    @classmethod
    def temper(cls, qz: dist.TorchDistribution, temperature: float) -> dist.TorchDistribution:
        """``qz`` (from :meth:`forward`) with its spread scaled by ``temperature``.

        Only guides that set :attr:`temperable` implement it; the others refuse
        with a :class:`~pyrovae.errors.ConfigError`.
        """
        require(cls, "temperable", "sampling at a temperature other than 1")
        raise NotImplementedError(f"{cls.title()} declares temperable but has no temper()")


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
