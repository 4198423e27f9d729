"""Encoder and decoder networks: plain ``nn.Module``s with no Pyro in them.

The encoder maps a batch ``(..., *data_shape)`` to features h(x) of size
``out_features``; the guide turns h(x) into q(z|x). The decoder maps
``(..., n_latent)`` to per-element parameters ``(..., *data_shape)`` that the
likelihood turns into p(x|z). Leading dimensions are arbitrary, so vectorized
particles need no special casing.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from pyrovae.errors import ConfigError
from pyrovae.model.networks.conv import ConvDecoder, ConvEncoder
from pyrovae.model.networks.linear import LinearDecoder, LinearEncoder
from pyrovae.model.networks.mlp import MLPDecoder, MLPEncoder


def build_networks(
    arch: str, image_shape: tuple[int, int, int], hidden: Sequence[int], n_latent: int
) -> tuple[nn.Module, nn.Module]:
    """The encoder and decoder of architecture ``arch`` (``mlp``, ``conv`` or ``linear``).

    Encoders carry ``out_features``, the size of h(x) that the guide reads.
    """
    if arch == "mlp":
        return MLPEncoder(image_shape, hidden), MLPDecoder(image_shape, hidden, n_latent)
    if arch == "conv":
        if min(image_shape[1:]) < 8:
            raise ConfigError(
                f"--arch conv needs images of at least 8x8, got {image_shape[1]}x{image_shape[2]};"
                " use --arch mlp"
            )
        return ConvEncoder(image_shape, hidden), ConvDecoder(image_shape, hidden, n_latent)
    if arch == "linear":
        return LinearEncoder(image_shape, hidden), LinearDecoder(image_shape, n_latent)
    raise ConfigError(f"--arch must be mlp, conv or linear, got {arch!r}")
