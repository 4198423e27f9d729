"""Input corruption C(x̃|x) of denoising autoencoders: the encoder reads a corrupted
copy x̃ of each data point, the likelihood scores the clean x.

Masking noise and salt-and-pepper noise are those of Vincent et al. (2008),
"Extracting and Composing Robust Features with Denoising Autoencoders";
additive Gaussian noise is the usual third. For a VAE, training q(z|x̃) with
the likelihood of the clean x is the denoising criterion of Im et al. (2017),
"Denoising Criterion for Variational Auto-Encoding Framework".

A corruption is written ``NAME:VALUE`` on the command line (``mask:0.3``);
:func:`parse_corruption` turns it into a callable that draws a fresh x̃ from
torch's random stream on every call.

Example
-------
>>> corrupt = parse_corruption("mask:0.25")
>>> x_tilde = corrupt(torch.ones(4, 1, 8, 8))  # about a quarter of the values set to 0
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch

from pyrovae.errors import ConfigError

#: What ``--corrupt`` takes, for messages and help.
CORRUPT_HELP = "mask:P, gaussian:SIGMA or salt-pepper:P"


@dataclass(frozen=True)
class Corruption:
    """Base class: ``corruption(x)`` is a fresh draw x̃ ~ C(x̃|x), of ``x``'s shape."""

    name: ClassVar[str]
    #: What VALUE means, for messages.
    meaning: ClassVar[str]
    value: float

    def __post_init__(self) -> None:
        if not math.isfinite(self.value) or not self.valid(self.value):
            raise ConfigError(
                f"--corrupt {self.spec}: {self.meaning}; e.g. --corrupt {self.name}:0.3"
            )

    @staticmethod
    def valid(value: float) -> bool:
        raise NotImplementedError

    @property
    def spec(self) -> str:
        """``NAME:VALUE``, as ``--corrupt`` takes it (and ``config.json`` records it)."""
        return f"{self.name}:{self.value:g}"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


@dataclass(frozen=True)
class MaskNoise(Corruption):
    """Each value set to 0 with probability ``value`` (masking noise)."""

    name = "mask"
    meaning = "P, the share of values set to 0, must be in [0, 1)"

    @staticmethod
    def valid(value: float) -> bool:
        return 0.0 <= value < 1.0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x.masked_fill(torch.rand_like(x) < self.value, 0.0)


@dataclass(frozen=True)
class GaussianNoise(Corruption):
    """Independent N(0, ``value``²) noise added to each value."""

    name = "gaussian"
    meaning = "SIGMA, the noise's standard deviation, must be positive"

    @staticmethod
    def valid(value: float) -> bool:
        return value > 0.0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.value * torch.randn_like(x)


@dataclass(frozen=True)
class SaltPepperNoise(Corruption):
    """Each value, with probability ``value``, replaced by the data's least or greatest
    value (even odds): ``low`` and ``high``, 0 and 1 for data in [0, 1]."""

    name = "salt-pepper"
    meaning = "P, the share of values set to the data's least or greatest, must be in (0, 1]"
    low: float = 0.0
    high: float = 1.0

    @staticmethod
    def valid(value: float) -> bool:
        return 0.0 < value <= 1.0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        # One uniform draw decides both whether a value is hit (u < p) and how:
        # pepper (low) below p/2, salt (high) from p/2 to p.
        u = torch.rand_like(x)
        ends = torch.full_like(x, self.low).masked_fill_(u >= self.value / 2, self.high)
        return torch.where(u < self.value, ends, x)


CORRUPTIONS: dict[str, type[Corruption]] = {
    cls.name: cls for cls in (MaskNoise, GaussianNoise, SaltPepperNoise)
}


def parse_corruption(
    spec: str | None, value_range: Sequence[float] | None = None
) -> Corruption | None:
    """The corruption ``spec`` (``"mask:0.3"``) names; ``None`` for none.

    ``value_range`` ``(least, greatest)``: the data's, where they leave [0, 1] (a
    run's ``config.data.display_range``), the values salt-and-pepper noise sets.

    Raises
    ------
    ConfigError
        An unknown name, a missing or non-numeric value, or one out of range.
    """
    if spec is None or spec == "":
        return None
    name, colon, text = str(spec).partition(":")
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    cls = CORRUPTIONS.get(name.strip())
    if cls is None or not colon or math.isnan(value):
        raise ConfigError(f"--corrupt takes {CORRUPT_HELP} (e.g. mask:0.3), got {spec!r}")
    if cls is SaltPepperNoise and value_range is not None:
        return SaltPepperNoise(value, low=float(value_range[0]), high=float(value_range[1]))
    return cls(value)
