"""The contract of an observation model p(x|z).

A likelihood is an ``nn.Module`` (so learned scales train with the rest of
the model) and a :class:`~pyrovae.components.Component`: it declares its name,
its options and its capabilities. Called on the decoder's output
``(..., *data_shape)`` it returns a Pyro distribution whose event is one whole
data point. Installed likelihoods are found under the entry-point group
``pyrovae.likelihoods``.

For incomplete data, :meth:`Likelihood.masked` leaves the missing values out
of log p(x|z) with Pyro's :meth:`~pyro.distributions.TorchDistributionMixin.mask`
(the element-wise form of ``poutine.mask``): the ELBO is then over the
observed values only, log p(x_obs|z), as in Mattei & Frellsen (2019), "MIWAE".
"""

from __future__ import annotations

from typing import ClassVar

import pyro.distributions as dist
import torch
from torch import nn
from torch.distributions import Independent

from pyrovae.components import Component, Registry
from pyrovae.errors import ConfigError
from pyrovae.model.context import ModelContext

LIKELIHOODS: Registry[type[Likelihood]] = Registry("likelihood")


class Likelihood(nn.Module, Component):
    """Base class: ``forward(decoded) -> p(x|z)`` with one data point as event.

    Parameters
    ----------
    context
        The data shape and latent size of the model.
    **options
        The values of the options the subclass declares.
    """

    kind: ClassVar[str] = "likelihood"
    #: True when observations must be exactly 0 or 1 (so the data are binarized).
    binary: ClassVar[bool] = False
    #: True when ``log_prob`` is the log of a probability mass, so -log p(x) is a code
    #: length; False for a density (bits/dim then needs 8-bit data to dequantize).
    discrete: ClassVar[bool] = False
    #: True when log p(x|z) can leave out missing values (:meth:`masked`): False where a
    #: value's probability reads other values, as in an autoregressive likelihood.
    maskable: ClassVar[bool] = True

    def __init__(self, context: ModelContext, **options: object) -> None:
        super().__init__()
        self.data_shape = tuple(context.shape)
        self.event_dims = context.event_dims

    def forward(self, decoded: torch.Tensor) -> dist.TorchDistribution:
        raise NotImplementedError

    def compiled_parts(self) -> list[nn.Module]:
        """Modules of this likelihood that ``train --compile`` compiles besides the networks:
        element-wise work that ``torch.compile`` fuses (none by default)."""
        return []

    def masked(self, px: dist.TorchDistribution, mask: torch.Tensor) -> dist.TorchDistribution:
        """``px`` (from :meth:`forward`) scoring only the values where ``mask`` is True.

        The values where it is False add 0 to ``log_prob`` whatever they hold
        (fill them with a value of the support, e.g. 0), so its ``log_prob`` is
        log p(x_obs|z); ``sample`` draws every value, as ``px`` does.

        Parameters
        ----------
        px
            p(x|z) with one data point as event, ``Independent`` over elements.
        mask
            ``(..., *data_shape)`` booleans, broadcastable to ``px``'s elements.
        """
        if not self.maskable:
            raise ConfigError(self.unmaskable())
        if not isinstance(px, Independent):
            raise ConfigError(
                f"{self.title()} returns a {type(px).__name__}, not a distribution independent "
                "over the values of a data point, so it cannot leave missing values out"
            )
        base: dist.TorchDistribution = px.base_dist  # type: ignore[assignment]
        return base.mask(mask).to_event(px.reinterpreted_batch_ndims)

    @classmethod
    def unmaskable(cls) -> str:
        """Why a likelihood that declares ``maskable`` False refuses missing values, in words."""
        return (
            f"{cls.title()} cannot leave missing values out; for incomplete data use a "
            "likelihood that can (pyrovae components lists them as maskable)"
        )
