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
        ("gated", (1, 8, 8)),
        ("gated", (12,)),
        ("linear", (1, 1, 6)),
        ("conv", (1, 28, 28)),
        ("conv", (3, 32, 32)),
        ("conv", (1, 30, 29)),  # sizes not divisible by 4 are cropped back
        ("conv", (3, 64, 64)),  # three stages
        ("conv", (3, 65, 40)),  # stages follow the shorter side (three), odd sizes cropped
        ("resnet", (1, 8, 8)),  # the smallest: two stages down to 2x2
        ("resnet", (1, 28, 28)),
        ("resnet", (3, 32, 32)),
        ("resnet", (3, 20, 20)),
        ("resnet", (1, 30, 29)),  # upsampled to 32x32, cropped back
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


@pytest.mark.parametrize("name", ["conv", "resnet"])
@pytest.mark.parametrize("data_shape", [(1, 4, 4), (64,)])
def test_image_networks_reject_data_they_cannot_read(name, data_shape):
    with pytest.raises(ConfigError, match=f"network '{name}' needs images.*--network mlp"):
        _build(name, data_shape)


def test_unknown_network_is_one_line():
    with pytest.raises(ComponentMissingError, match="unknown network 'transformer'") as info:
        NETWORKS.get("transformer")
    assert "\n" not in str(info.value)


# --- gated -------------------------------------------------------------------------------


def test_gated_layer_is_the_linear_map_gated_by_the_sigmoid_of_another():
    """Each hidden layer is (W x + b) * sigmoid(V x + c) (Tomczak & Welling 2018's
    GatedDense), written out with W, b, V and c as separate maps."""
    encoder, decoder = _build("gated", (1, 4, 4), hidden=(7, 5), n_latent=3)
    x = torch.rand(6, 1, 4, 4)
    h = x.flatten(1)
    for layer in encoder.net:
        weight, bias = layer.linear.weight, layer.linear.bias
        n_out = layer.out_features
        linear = h @ weight[:n_out].T + bias[:n_out]
        gate = torch.sigmoid(h @ weight[n_out:].T + bias[n_out:])
        h = linear * gate
    torch.testing.assert_close(encoder(x), h)
    assert h.shape == (6, 5)
    sizes = [(m.linear.in_features, m.out_features) for m in decoder.net[0]]
    assert sizes == [(3, 5), (5, 7)] and decoder.net[1].out_features == 16


def test_gated_network_counts_two_maps_per_hidden_layer():
    encoder, decoder = _build("gated", (1, 28, 28), hidden=(300, 300), n_latent=40)
    gated = lambda n_in, n_out: 2 * (n_in * n_out + n_out)  # noqa: E731
    assert _n_params(encoder) == gated(784, 300) + gated(300, 300)
    assert _n_params(decoder) == gated(40, 300) + gated(300, 300) + (300 * 784 + 784)


# --- resnet ------------------------------------------------------------------------------


def _n_params(*modules) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


def _block_params(n_in: int, n_out: int, skip: bool) -> int:
    """A pre-activation block counted by hand: two GroupNorms (scale and shift), two 3x3
    convolutions with biases, and a 1x1 convolution on the skip path when it needs one."""
    norms = 2 * n_in + 2 * n_out
    convs = (n_in * n_out * 9 + n_out) + (n_out * n_out * 9 + n_out)
    return norms + convs + (n_in * n_out + n_out if skip else 0)


def test_resnet_parameter_count_is_the_hand_count():
    """28x28 with the defaults (base 16, one block per stage): two stages of 16 and 32
    channels down to 7x7, then the dense layer; the decoder mirrors it."""
    encoder, decoder = _build("resnet", (1, 28, 28), hidden=(400,), n_latent=16)
    stem = 1 * 16 * 9 + 16
    stages = _block_params(16, 16, skip=True) + _block_params(16, 32, skip=True) + 2 * 32
    assert _n_params(encoder.stem, encoder.stages) == stem + stages
    assert encoder.dense[0].in_features == 32 * 7 * 7
    assert _n_params(encoder) == stem + stages + (32 * 7 * 7 * 400 + 400)
    up = _block_params(32, 16, skip=True) + _block_params(16, 16, skip=False)
    head = 2 * 16 + (16 * 1 * 9 + 1)
    dense = (16 * 400 + 400) + (400 * 32 * 7 * 7 + 32 * 7 * 7)
    assert _n_params(decoder) == dense + up + head
    # The dense layers dominate both networks at 28x28, and the conv network's last stage
    # has 64 channels to this one's 32: about half its parameters.
    conv_encoder, conv_decoder = _build("conv", (1, 28, 28), hidden=(400,), n_latent=16)
    assert 0.4 < _n_params(encoder, decoder) / _n_params(conv_encoder, conv_decoder) < 0.6


@pytest.mark.parametrize("side, stages", [(8, 2), (28, 2), (64, 3), (128, 4)])
def test_resnet_is_one_stage_deeper_per_halving_and_takes_its_options(side, stages):
    from pyrovae.model.networks.resnet import ResidualBlock, UpBlock

    cls = NETWORKS.get("resnet")
    options = cls.resolve_options({"hidden": "16", "channels_base": "8", "blocks": "2"})
    encoder, decoder = cls(**options).build(ModelContext(data_shape=(3, side, side), n_latent=3))
    blocks = [m for m in encoder.stages if isinstance(m, ResidualBlock)]
    strided = [b for b in blocks if b.branch[2].stride == (2, 2)]
    assert len(strided) == stages and len(blocks) == 2 * stages
    assert [b.branch[2].out_channels for b in strided] == [8 * 2**i for i in range(stages)]
    ups = [m for m in decoder.stages if isinstance(m, UpBlock)]
    assert len(ups) == stages and decoder.stages[-1].out_channels == 3


def test_resnet_gradient_reaches_the_first_layers():
    encoder, decoder = _build("resnet", (1, 28, 28), n_latent=3)
    x = torch.rand(4, 1, 28, 28)
    h = encoder(x)
    (h.square().sum() + decoder(h[:, :3]).square().sum()).backward()
    assert encoder.stem.weight.grad is not None and encoder.stem.weight.grad.abs().sum() > 0
    first_linear = decoder.dense[0][0]
    assert first_linear.weight.grad is not None and first_linear.weight.grad.abs().sum() > 0


def test_resnet_treats_each_example_on_its_own():
    """GroupNorm, not BatchNorm: an image's features and decoded parameters do not depend
    on the rest of the batch (in training mode too), as the ELBO's plate and importance
    sampling over many draws assume."""
    encoder, decoder = _build("resnet", (3, 8, 8))
    encoder.train(), decoder.train()
    x, z = torch.rand(6, 3, 8, 8), torch.randn(6, 3)
    torch.testing.assert_close(encoder(x)[:1], encoder(x[:1]))
    torch.testing.assert_close(decoder(z)[:1], decoder(z[:1]))
