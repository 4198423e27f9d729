from __future__ import annotations

import pytest
import torch

from pyrovae.errors import ConfigError
from pyrovae.model.networks import build_networks


@pytest.mark.parametrize(
    "arch, image_shape",
    [
        ("mlp", (1, 8, 8)),
        ("linear", (1, 1, 6)),
        ("conv", (1, 28, 28)),
        ("conv", (3, 32, 32)),
        ("conv", (1, 30, 29)),  # sizes not divisible by 4 are cropped back
    ],
)
def test_shapes_with_extra_leading_dims(arch, image_shape):
    encoder, decoder = build_networks(arch, image_shape, (16,), n_latent=3)
    x = torch.rand(5, *image_shape)
    h = encoder(x)
    assert h.shape == (5, encoder.out_features)
    z = torch.randn(2, 5, 3)  # (particles, batch, n_latent)
    assert decoder(z).shape == (2, 5, *image_shape)
    assert encoder(x.expand(2, *x.shape)).shape == (2, 5, 16)


def test_conv_rejects_tiny_images():
    with pytest.raises(ConfigError, match="--arch mlp"):
        build_networks("conv", (1, 4, 4), (16,), 2)


def test_unknown_arch():
    with pytest.raises(ConfigError, match="--arch"):
        build_networks("transformer", (1, 8, 8), (16,), 2)
