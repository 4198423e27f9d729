"""The contract of an observation model p(x|z).

A likelihood is an ``nn.Module`` (so learned scales train with the rest of
the model) and a :class:`~pyrovae.components.Component`: it declares its name,
its options and its capabilities. Called on the decoder's output
``(..., *data_shape)`` it returns a Pyro distribution whose event is one whole
data point. Installed likelihoods are found under the entry-point group
``pyrovae.likelihoods``.
"""

from __future__ import annotations

from typing import ClassVar

import pyro.distributions as dist
import torch
from torch import nn

from pyrovae.components import Component, Registry
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

    def __init__(self, context: ModelContext, **options: object) -> None:
        super().__init__()
        self.data_shape = tuple(context.shape)
        self.event_dims = context.event_dims

    def forward(self, decoded: torch.Tensor) -> dist.TorchDistribution:
        raise NotImplementedError
