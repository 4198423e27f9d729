"""The contract of a network: an encoder and a decoder for one data shape.

A network component is a :class:`~pyrovae.components.Component` whose
:meth:`Network.build` returns two plain ``nn.Module``s (no Pyro in them):

- the encoder maps a batch ``(..., *data_shape)`` to features h(x)
  ``(..., out_features)`` and carries an ``out_features`` attribute; the
  guide head turns h(x) into the parameters of q(z|x);
- the decoder maps codes ``(..., n_latent)`` to the likelihood's parameters
  ``(..., *data_shape)`` (logits for Bernoulli, the mean for Gaussian).

Leading dimensions are arbitrary, so vectorized particles (an extra leading
dimension on z) need no special casing. Installed networks are found under
the entry-point group ``pyrovae.networks``.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, NamedTuple

from torch import nn

from pyrovae.components import Component, Option, Registry, sizes
from pyrovae.model.context import ModelContext

NETWORKS: Registry[type[Network]] = Registry("network")

#: Hidden layer sizes, shared by the built-in networks (one ``--hidden``).
HIDDEN = Option("hidden", (400,), "Hidden layer sizes, e.g. 400 or 512,256.", sizes)


class Networks(NamedTuple):
    """An encoder x -> h(x) and a decoder z -> the likelihood's parameters."""

    encoder: nn.Module
    decoder: nn.Module


class Network(Component):
    """Base class: options in, an encoder/decoder pair for a data shape out."""

    kind: ClassVar[str] = "network"
    #: Whether :meth:`build` builds the encoder for any data shape it is given, so that
    #: for incomplete data it can read the mask as extra channels
    #: (:mod:`pyrovae.model.networks.observed`); False for modules built elsewhere.
    builds_any_shape: ClassVar[bool] = True

    def __init__(self, **options: Any) -> None:
        self.values: dict[str, Any] = dict(options)

    def build(self, context: ModelContext) -> Networks:
        """The encoder and decoder for ``context.data_shape`` and ``context.n_latent``."""
        raise NotImplementedError


def n_elements(data_shape: tuple[int, ...]) -> int:
    """The number of values in one data point."""
    return math.prod(data_shape)
