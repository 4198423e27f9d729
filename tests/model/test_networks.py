from __future__ import annotations

import pytest
import torch

from pyrovae.errors import ComponentMissingError, ConfigError
from pyrovae.model.context import ModelContext
from pyrovae.model.networks.base import NETWORKS


def _build(name: str, data_shape: tuple[int, ...], hidden=(16,), n_latent: int = 3):
    cls = NETWORKS.get(name)
    options = cls.resolve_options({"hidden": hidden})
    context = ModelContext(data_shape=data_shape, n_latent=n_latent)
    cls.check(options, context)
    return cls(**options).build(context)


@pytest.mark.parametrize(
    "name, data_shape",
    [
        ("mlp", (1, 8, 8)),
        ("mlp", (12,)),  # vector data: any shape
        ("linear", (1, 1, 6)),
        ("conv", (1, 28, 28)),
        ("conv", (3, 32, 32)),
        ("conv", (1, 30, 29)),  # sizes not divisible by 4 are cropped back
    ],
)
def test_shapes_with_extra_leading_dims(name, data_shape):
    encoder, decoder = _build(name, data_shape)
    x = torch.rand(5, *data_shape)
    h = encoder(x)
    assert h.shape == (5, encoder.out_features)
    z = torch.randn(2, 5, 3)  # (particles, batch, n_latent)
    assert decoder(z).shape == (2, 5, *data_shape)
    assert encoder(x.expand(2, *x.shape)).shape == (2, 5, encoder.out_features)


@pytest.mark.parametrize("data_shape", [(1, 4, 4), (64,)])
def test_conv_rejects_data_it_cannot_read(data_shape):
    with pytest.raises(ConfigError, match="--network mlp"):
        _build("conv", data_shape)


def test_unknown_network_is_one_line():
    with pytest.raises(ComponentMissingError, match="unknown network 'transformer'") as info:
        NETWORKS.get("transformer")
    assert "\n" not in str(info.value)
