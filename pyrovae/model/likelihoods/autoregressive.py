"""Binary pixels that also read the pixels before them: p(x|z) = Π_i p(x_i | x_<i, z).

The decoder's logit d_i(z) of each pixel gets a term of the pixels before it in
raster order, as in PixelCNN's first layer (van den Oord et al. 2016, "Pixel
Recurrent Neural Networks") and the PixelVAE / PixelHVAE decoders (Gulrajani et
al. 2017; Tomczak & Welling 2018, "VAE with a VampPrior")::

    logit_i = d_i(z) + Σ_c w_c relu(a_c(x)_i + u_c d_i(z)) + b,

where ``a = conv(x)`` is a masked convolution with ``ar_channels`` outputs over an
``ar_kernel`` × ``ar_kernel`` window that sees only the rows above pixel i and the
pixels to its left (the "type A" mask), so logit i never reads x_j for j ≥ i and
the product of the conditionals is a normalized distribution. For images of
several channels, the channels of one pixel are independent given the pixels
before it and z. ``w``, ``u`` and ``b`` start at 0, so an untrained model is the
plain Bernoulli decoder.

Scoring is one pass (``a(x)`` once per image, however many draws of z share it);
drawing is sequential, one pass per pixel. E[x|z] has no closed form: ``mean``
is the Rao-Blackwellized estimate E[x_i] = E[p(x_i = 1 | x_<i, z)] over
``ar_mean_draws`` sequential draws, so it is unbiased, with a Monte Carlo error
that shrinks as 1/sqrt(ar_mean_draws). A missing pixel would change every
conditional after it, so this likelihood cannot leave missing values out
(``maskable`` is False): training on data with NaN and ``impute`` refuse it.

``benchmarks/autoregressive_decoder.py`` measured this decoder (8 channels,
5 × 5) against the plain one at equal CPU budgets; docs/benchmarks.md has the figures.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import constraints

from pyrovae.components import Option, positive_int
from pyrovae.errors import ConfigError
from pyrovae.model.context import ModelContext
from pyrovae.model.likelihoods.base import Likelihood

#: The most draws E[x|z] is estimated from: each is a sequential pass over the pixels,
#: and 4096 put its Monte Carlo error under 1/64 of one draw's.
MAX_MEAN_DRAWS = 4096
#: Values (float32: 64 MiB) one chunk of mean draws holds: the probabilities, the
#: decoder's logits repeated, the zero-padded images drawn into and a pixel's window;
#: the draws come in chunks of this size, so memory does not grow with
#: ``ar_mean_draws`` (one draw of more images than fit is one chunk).
MEAN_CHUNK_VALUES = 1 << 24


def odd_kernel(value: Any) -> int:
    """An odd window size of at least 3 (``"5"`` -> 5)."""
    size = positive_int(value)
    if size < 3 or size % 2 == 0:
        raise ValueError(f"must be an odd whole number of at least 3, got {value!r}")
    return size


def causal_mask(channels: int, in_channels: int, kernel: int) -> torch.Tensor:
    """The "type A" mask ``(channels, in_channels, kernel, kernel)``: 1 on the rows above
    the centre and the pixels left of it, 0 on the centre and after it."""
    mask = torch.ones(channels, in_channels, kernel, kernel)
    mask[:, :, kernel // 2, kernel // 2 :] = 0  # the centre and the rest of its row
    mask[:, :, kernel // 2 + 1 :] = 0  # the rows below
    return mask


def hidden_logits(
    decoded: torch.Tensor, a: torch.Tensor, u: torch.Tensor, w: torch.Tensor, b: torch.Tensor
) -> torch.Tensor:
    """d + Σ_c w_c relu(a_c + u_c d) + b ``(..., C, H, W)`` for the decoder's logits ``d``
    ``(..., C, H, W)`` and the context ``a`` ``(..., channels, H, W)``; ``u`` and ``w``
    ``(C, channels, 1, 1)``, ``b`` ``(C, 1, 1)``."""
    # (..., C, channels, H, W): each output channel's hidden units
    hidden = F.relu(a.unsqueeze(-4) + u * decoded.unsqueeze(-3))
    return decoded + (hidden * w).sum(-3) + b


class HiddenUnits(nn.Module):
    """:func:`hidden_logits` as a module, so that ``train --compile`` can fuse it: eager, it
    writes the (..., C, channels, H, W) hidden units several times over, which made an
    epoch of ``--preset paper`` 2.3 times as long as with ``bernoulli`` on one thread."""

    def forward(
        self,
        decoded: torch.Tensor,
        a: torch.Tensor,
        u: torch.Tensor,
        w: torch.Tensor,
        b: torch.Tensor,
    ) -> torch.Tensor:
        return hidden_logits(decoded, a, u, w, b)


class AutoregressiveBernoulliLikelihood(Likelihood):
    """Binary pixels, each Bernoulli given z and the pixels before it (a masked convolution
    adds their term to the decoder's logit); sampling is pixel by pixel, no missing data."""

    name = "autoregressive-bernoulli"
    binary = True
    discrete = True
    maskable = False
    options = (
        Option("ar_channels", 8, "Hidden channels of the masked convolution.", positive_int),
        Option(
            "ar_kernel", 5, "Window of the masked convolution (odd), in pixels.", odd_kernel, "ODD"
        ),
        Option(
            "ar_mean_draws",
            16,
            f"Sequential draws that estimate E[x|z] (sample and reconstruct images); "
            f"more than {MAX_MEAN_DRAWS} draw {MAX_MEAN_DRAWS}.",
            positive_int,
            "INTEGER",
            sizes_model=False,
        ),
    )
    mask: torch.Tensor  # a buffer

    def __init__(
        self,
        context: ModelContext,
        *,
        ar_channels: int = 8,
        ar_kernel: int = 5,
        ar_mean_draws: int = 16,
    ) -> None:
        super().__init__(context)
        if len(self.data_shape) != 3:
            raise ConfigError(
                f"{self.title()} needs images (channels, height, width); "
                f"these data points have shape {self.data_shape}"
            )
        n_channels, height, width = self.data_shape
        widest = 2 * max(height, width) - 1
        if ar_kernel > widest:
            raise ConfigError(
                f"--ar-kernel {ar_kernel} is wider than {height}x{width} images can use: a "
                f"window of more than 2 x {max(height, width)} - 1 = {widest} pixels reads only "
                f"zero padding beyond that; choose an odd size of at most {widest}"
            )
        if ar_mean_draws > MAX_MEAN_DRAWS:  # a warning, not an error: older runs load
            warnings.warn(
                f"--ar-mean-draws {ar_mean_draws} is more than {MAX_MEAN_DRAWS}: E[x|z] is "
                f"estimated from {MAX_MEAN_DRAWS} draws",
                stacklevel=2,
            )
        self.kernel, self.mean_draws = ar_kernel, min(ar_mean_draws, MAX_MEAN_DRAWS)
        self.conv = nn.Conv2d(n_channels, ar_channels, ar_kernel, padding=ar_kernel // 2)
        self.register_buffer("mask", causal_mask(ar_channels, n_channels, ar_kernel))
        self.u = nn.Parameter(torch.zeros(n_channels, ar_channels, 1, 1))
        self.w = nn.Parameter(torch.zeros(n_channels, ar_channels, 1, 1))
        self.b = nn.Parameter(torch.zeros(n_channels, 1, 1))
        self.hidden_units = HiddenUnits()  # no parameters: the names above stay in checkpoints

    def forward(self, decoded: torch.Tensor) -> dist.TorchDistribution:
        return AutoregressiveBernoulli(decoded, self)

    @classmethod
    def unmaskable(cls) -> str:
        return (
            f"{cls.title()} cannot leave missing values out: each pixel's probability "
            "reads the pixels before it; a run trained with --likelihood bernoulli takes "
            "incomplete data"
        )

    def masked_weight(self) -> torch.Tensor:
        return self.conv.weight * self.mask

    def context(self, x: torch.Tensor) -> torch.Tensor:
        """a(x) ``(..., channels, H, W)`` of images ``(..., C, H, W)``: pixel i's window
        of the pixels before it."""
        flat = x.reshape(-1, *x.shape[-3:])
        a = F.conv2d(flat, self.masked_weight(), self.conv.bias, padding=self.kernel // 2)
        return a.reshape(*x.shape[:-3], *a.shape[-3:])

    def logits(self, decoded: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """The logits ``(..., C, H, W)`` of the decoder's ``decoded`` ``(..., C, H, W)`` given
        the context ``a`` ``(..., channels, H, W)`` of the images."""
        return self.hidden_units(decoded, a, self.u, self.w, self.b)

    def compiled_parts(self) -> list[nn.Module]:
        return [self.hidden_units]

    @torch.no_grad()
    def draw(
        self, decoded: torch.Tensor, groups: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One sequential draw x ~ p(x|z) per image of ``decoded`` ``(N, C, H, W)``, and the
        probabilities p(x_i = 1 | x_<i, z) it was drawn with, both ``(N, C, H, W)``.

        ``groups``: the images come in that many consecutive blocks of equal size whose
        images draw each pixel from the same uniform number (common random numbers:
        each image's draw follows its own p(x|z), but images of a block are drawn
        alike where their probabilities are alike); ``None``: every image independently.
        """
        n, _, height, width = decoded.shape
        pad = self.kernel // 2
        padded = decoded.new_zeros(n, decoded.shape[1], height + 2 * pad, width + 2 * pad)
        probs = torch.empty_like(decoded)
        weight = self.masked_weight().flatten(1).T  # (C * kernel², channels)
        bias = self.conv.bias
        assert bias is not None  # the convolution is built with one
        for row in range(height):
            for col in range(width):
                window = padded[:, :, row : row + self.kernel, col : col + self.kernel]
                a = torch.addmm(bias, window.reshape(n, -1), weight)  # (N, channels)
                logit = hidden_logits(  # one pixel as a 1 x 1 image; never compiled
                    decoded[:, :, row, col, None, None], a[:, :, None, None], self.u, self.w, self.b
                )
                p = torch.sigmoid(logit[:, :, 0, 0])  # (N, C)
                probs[:, :, row, col] = p
                padded[:, :, row + pad, col + pad] = _bernoulli(p, groups)
        return padded[:, :, pad : pad + height, pad : pad + width], probs


def _bernoulli(p: torch.Tensor, groups: int | None) -> torch.Tensor:
    """Bernoulli draws of probabilities ``p`` ``(N, C)``, independent, or with one uniform
    number per block of ``N / groups`` rows (and channel)."""
    if groups is None:
        return torch.bernoulli(p)
    uniform = torch.rand(groups, 1, p.shape[1], dtype=p.dtype, device=p.device)
    return (uniform < p.reshape(groups, -1, p.shape[1])).reshape(p.shape).to(p.dtype)


class AutoregressiveBernoulli(dist.TorchDistribution):
    """p(x|z) = Π_i Bernoulli(x_i | σ(logit_i(x_<i, z))) over images ``(C, H, W)``: one data
    point is the event; ``likelihood`` holds the masked convolution.

    Parameters
    ----------
    decoded
        The decoder's logits d(z) ``(*batch, C, H, W)``.
    likelihood
        The :class:`AutoregressiveBernoulliLikelihood` whose convolution reads x.
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {"decoded": constraints.real}
    support = constraints.independent(constraints.boolean, 3)
    has_rsample = False

    def __init__(
        self,
        decoded: torch.Tensor,
        likelihood: AutoregressiveBernoulliLikelihood,
        validate_args: bool | None = None,
    ) -> None:
        self.decoded, self.likelihood = decoded, likelihood
        super().__init__(decoded.shape[:-3], decoded.shape[-3:], validate_args=validate_args)

    def expand(self, batch_shape: Any, _instance: Any = None) -> AutoregressiveBernoulli:
        shape = torch.Size(batch_shape) + self.event_shape
        return AutoregressiveBernoulli(
            self.decoded.expand(shape), self.likelihood, validate_args=self._validate_args
        )

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """log p(x|z) ``(*batch)``: the convolution reads ``value`` once however many
        draws of z its batch dimensions broadcast against."""
        if self._validate_args:
            self._validate_sample(value)
        value = value.to(self.decoded.dtype)
        logits = self.likelihood.logits(self.decoded, self.likelihood.context(value))
        log_p = F.logsigmoid(logits) + (value - 1) * logits  # x l - softplus(l)
        return log_p.flatten(-3).sum(-1)

    def sample(self, sample_shape: torch.Size | list[int] | tuple[int, ...] = ()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        decoded = self.decoded.expand(shape).reshape(-1, *self.event_shape)
        return self.likelihood.draw(decoded)[0].reshape(shape)

    def _probability_sums(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """p(x_i = 1 | x_<i, z) along ``ar_mean_draws`` sequential draws of x, each an
        unbiased estimate of E[x|z], summed over the first half of the draws, the second
        half and the odd last one (zeros when the count is even): three
        ``(*batch, C, H, W)``.

        The draws come in chunks of at most :data:`MEAN_CHUNK_VALUES` values in memory;
        the images of one draw share their uniform numbers (:meth:`draw`'s
        ``groups``), so that figures of E[x|z] at nearby codes differ by what the
        codes change, not by independent Monte Carlo noise.
        """
        draws = self.likelihood.mean_draws
        half = draws // 2
        decoded = self.decoded.reshape(-1, *self.event_shape)  # (N, C, H, W)
        channels, height, width = self.event_shape
        pad = self.likelihood.kernel // 2
        # Per image of a draw: its probabilities and logits, its padded image, a window.
        per_image = channels * (
            2 * height * width + (height + 2 * pad) * (width + 2 * pad) + (2 * pad + 1) ** 2
        )
        per_draw = max(1, MEAN_CHUNK_VALUES // (decoded.shape[0] * per_image))
        sums = [torch.zeros_like(decoded) for _ in range(3)]
        for start in range(0, draws, per_draw):
            count = min(per_draw, draws - start)
            repeated = decoded.repeat(count, 1, 1, 1)  # (count * N, ...), image n at n + k N
            probs = self.likelihood.draw(repeated, groups=count)[1].reshape(count, *decoded.shape)
            for k, p in enumerate(probs, start):
                sums[0 if k < half else 1 if k < 2 * half else 2] += p
        first, second, odd = (s.reshape(self.decoded.shape) for s in sums)
        return first, second, odd

    @property
    def mean(self) -> torch.Tensor:
        """E[x|z], estimated without bias: p(x_i = 1 | x_<i, z) averaged over
        ``ar_mean_draws`` sequential draws of x (Rao-Blackwellized: the conditional
        probabilities, not the drawn pixels, are averaged)."""
        first, second, odd = self._probability_sums()
        return (first + second + odd) / self.likelihood.mean_draws

    @property
    def variance(self) -> torch.Tensor:
        """Var[x_i | z] = m(1 - m) for binary x_i with m = E[x_i], estimated without bias:
        m and m² from the means a and b of two independent halves of the
        ``ar_mean_draws`` draws, as (a + b) / 2 and ab (m(1 - m) of one estimate
        would be low by its variance). With one draw, that one's p(1 - p)."""
        first, second, odd = self._probability_sums()
        half = self.likelihood.mean_draws // 2
        if half == 0:
            return odd * (1 - odd)
        # An odd last draw is left out: (a + b) / 2 - ab >= 0.
        a, b = first / half, second / half
        return (a + b) / 2 - a * b
