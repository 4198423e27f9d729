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
        ("conv", (3, 64, 64)),  # three stages
        ("conv", (3, 65, 40)),  # stages follow the shorter side (three), odd sizes cropped
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


@pytest.mark.parametrize(
    "side, stages, features",
    [(8, 2, 64 * 2 * 2), (28, 2, 64 * 7 * 7), (32, 2, 64 * 8 * 8), (64, 3, 128 * 8 * 8),
     (128, 4, 256 * 8 * 8), (256, 5, 256 * 8 * 8)],
)  # fmt: skip
def test_conv_is_one_stage_deeper_per_halving_beyond_32_pixels(side, stages, features):
    from torch import nn

    encoder, decoder = _build("conv", (3, side, side))
    convs = [m for m in encoder.conv if isinstance(m, nn.Conv2d)]
    deconvs = [m for m in decoder.deconv if isinstance(m, nn.ConvTranspose2d)]
    assert len(convs) == len(deconvs) == stages
    assert encoder.dense[0].in_features == features  # (channels, 8 x 8 or less) flattened
    assert [c.out_channels for c in convs][:3] == [32, 64, 128][:stages]
    assert deconvs[-1].out_channels == 3 and not isinstance(decoder.deconv[-1], nn.ReLU)


def test_conv_keeps_the_two_stage_layout_of_earlier_runs():
    """Runs of images of up to 32 pixels trained before the network grew deeper still load:
    the same parameter names and shapes as the fixed two-stage network had."""
    encoder, decoder = _build("conv", (1, 28, 28), hidden=(400,), n_latent=16)
    shapes = {k: tuple(v.shape) for k, v in [*encoder.state_dict().items(),
                                             *decoder.state_dict().items()]}  # fmt: skip
    assert shapes["conv.0.weight"] == (32, 1, 4, 4) and shapes["conv.2.weight"] == (64, 32, 4, 4)
    assert shapes["dense.0.weight"] == (400, 64 * 7 * 7)
    assert shapes["deconv.0.weight"] == (64, 32, 4, 4) and shapes["deconv.2.weight"] == (
        32,
        1,
        4,
        4,
    )
    assert "conv.4.weight" not in shapes and "deconv.4.weight" not in shapes


@pytest.mark.parametrize("data_shape", [(1, 4, 4), (64,)])
def test_conv_rejects_data_it_cannot_read(data_shape):
    with pytest.raises(ConfigError, match="--network mlp"):
        _build("conv", data_shape)


def test_unknown_network_is_one_line():
    with pytest.raises(ComponentMissingError, match="unknown network 'transformer'") as info:
        NETWORKS.get("transformer")
    assert "\n" not in str(info.value)
