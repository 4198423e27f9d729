"""Encoder and decoder networks: plain ``nn.Module``s with no Pyro in them.

The encoder maps an image batch ``(..., C, H, W)`` to a feature vector h(x)
of size ``out_features``; the guide turns h(x) into q(z|x). The decoder maps
``(..., n_latent)`` to per-pixel parameters ``(..., C, H, W)`` that the
likelihood turns into p(x|z). Leading dimensions are arbitrary, so vectorized
particles (an extra leading dim on z) need no special casing.

MLP: Kingma & Welling (2014), "Auto-Encoding Variational Bayes".
Conv: two stride-2 convolutions each way, as in most image VAEs since
Salimans et al. (2015) and the DCGAN family.
Linear: affine maps both ways; with a Gaussian likelihood the model is
probabilistic PCA (Tipping & Bishop 1999), whose marginal likelihood and
posterior are closed form (see :mod:`pyrovae.ppca`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pyrovae.errors import ConfigError


def _mlp(sizes: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(n_in, n_out), nn.ReLU()]
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    """Flatten the image, then ReLU layers of sizes ``hidden``."""

    def __init__(self, image_shape: tuple[int, int, int], hidden: Sequence[int]) -> None:
        super().__init__()
        self.image_shape = tuple(image_shape)
        n_pixels = image_shape[0] * image_shape[1] * image_shape[2]
        self.net = _mlp([n_pixels, *hidden])
        self.out_features = hidden[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(-3))  # (..., hidden[-1])


class MLPDecoder(nn.Module):
    """ReLU layers of sizes ``reversed(hidden)``, then a linear map to every pixel."""

    def __init__(
        self, image_shape: tuple[int, int, int], hidden: Sequence[int], n_latent: int
    ) -> None:
        super().__init__()
        self.image_shape = tuple(image_shape)
        n_pixels = image_shape[0] * image_shape[1] * image_shape[2]
        widths = [n_latent, *reversed(hidden)]
        self.net = nn.Sequential(_mlp(widths), nn.Linear(widths[-1], n_pixels))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).unflatten(-1, self.image_shape)  # (..., C, H, W)


def _halved(size: int) -> int:
    return (size + 1) // 2


class ConvEncoder(nn.Module):
    """Conv(32, 4, stride 2) -> Conv(64, 4, stride 2) -> dense layers ``hidden``."""

    def __init__(self, image_shape: tuple[int, int, int], hidden: Sequence[int]) -> None:
        super().__init__()
        channels, height, width = image_shape
        self.image_shape = tuple(image_shape)
        self.conv = nn.Sequential(
            nn.Conv2d(channels, 32, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2, padding=1),
            nn.ReLU(),
        )
        n_features = 64 * (height // 4) * (width // 4)
        self.dense = _mlp([n_features, *hidden])
        self.out_features = hidden[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch_shape = x.shape[:-3]
        h = self.conv(x.reshape(-1, *self.image_shape))  # (batch, 64, H/4, W/4)
        return self.dense(h.flatten(1)).reshape(*batch_shape, -1)  # (..., hidden[-1])


class ConvDecoder(nn.Module):
    """Mirror of :class:`ConvEncoder`: dense layers, then two stride-2 transposed convs."""

    def __init__(
        self, image_shape: tuple[int, int, int], hidden: Sequence[int], n_latent: int
    ) -> None:
        super().__init__()
        channels, height, width = image_shape
        self.image_shape = tuple(image_shape)
        # Upsampling doubles twice; start from a grid that covers the image, then crop.
        self.grid = (_halved(_halved(height)), _halved(_halved(width)))
        widths = [n_latent, *reversed(hidden)]
        self.dense = nn.Sequential(
            _mlp(widths), nn.Linear(widths[-1], 64 * self.grid[0] * self.grid[1]), nn.ReLU()
        )
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(32, channels, 4, stride=2, padding=1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        batch_shape = z.shape[:-1]
        h = self.dense(z.reshape(-1, z.shape[-1])).unflatten(-1, (64, *self.grid))
        out = self.deconv(h)[..., : self.image_shape[1], : self.image_shape[2]]
        return out.reshape(*batch_shape, *self.image_shape)  # (..., C, H, W)


class LinearEncoder(nn.Module):
    """One affine map from the flattened image to ``hidden[-1]`` features."""

    def __init__(self, image_shape: tuple[int, int, int], hidden: Sequence[int]) -> None:
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.net = nn.Linear(image_shape[0] * image_shape[1] * image_shape[2], hidden[-1])
        self.out_features = hidden[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(-3))  # (..., hidden[-1])


class LinearDecoder(nn.Module):
    """x's mean = W z + b: the decoder of probabilistic PCA."""

    def __init__(self, image_shape: tuple[int, int, int], n_latent: int) -> None:
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.net = nn.Linear(n_latent, image_shape[0] * image_shape[1] * image_shape[2])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).unflatten(-1, self.image_shape)  # (..., C, H, W)


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
