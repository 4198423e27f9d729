"""The mean and standard deviation of q(z|x), per latent coordinate, for any guide.

The mean-field guide's moments are closed form. A flow guide's q(z|x) is a
Normal pushed through flow layers (a :class:`~pyro.distributions.TransformedDistribution`
with no closed-form moments), so they are estimated from ``draws`` samples of
q(z|x), each with its Monte Carlo standard error: ``std / sqrt(draws)`` for the
mean, and for the standard deviation the delta-method error
``sqrt((m4 - s^4) / draws) / (2 s)``, where ``m4`` is the fourth central moment
of the draws (Rao, "Linear Statistical Inference", 1973, §6a.2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.distributions import Distribution

from pyrovae.errors import ConfigError

#: Draws of q(z|x) per data point where its moments have no closed form.
DEFAULT_DRAWS = 1000


@dataclass
class PosteriorMoments:
    """Mean and standard deviation of q(z|x), each ``(batch, n_latent)``.

    ``mean_se`` and ``std_se`` are their Monte Carlo standard errors, and
    ``draws`` the number of draws they come from; all three are ``None`` where
    the moments are closed form.
    """

    mean: torch.Tensor
    std: torch.Tensor
    mean_se: torch.Tensor | None = None
    std_se: torch.Tensor | None = None
    draws: int | None = None

    @property
    def sampled(self) -> bool:
        """Whether the moments are Monte Carlo estimates."""
        return self.draws is not None


def posterior_moments(qz: Distribution, draws: int = DEFAULT_DRAWS) -> PosteriorMoments:
    """The mean and standard deviation of ``qz`` (batch ``(batch,)``, event ``(n_latent,)``):
    closed form when the distribution has them, else estimated from ``draws`` samples.

    Example
    -------
    >>> moments = posterior_moments(vae.qz(x), draws=1000)  # doctest: +SKIP
    >>> moments.mean, moments.mean_se  # (batch, n_latent) each; mean_se None if exact
    """
    try:
        return PosteriorMoments(qz.mean, qz.stddev)
    except NotImplementedError:
        return sampled_moments(qz, draws)


def sampled_moments(qz: Distribution, draws: int) -> PosteriorMoments:
    """Monte Carlo moments of ``qz`` from ``draws`` samples, with their standard errors."""
    if draws < 2:
        raise ConfigError(f"draws must be at least 2 to estimate a spread, got {draws}")
    z = qz.sample((draws,)).double()  # (draws, batch, n_latent)
    mean = z.mean(0)
    centred = z - mean
    variance = centred.pow(2).sum(0) / (draws - 1)
    std = variance.sqrt()
    fourth = centred.pow(4).mean(0)
    # Var(s^2) ~ (m4 - sigma^4) / n, and s = sqrt(s^2): SE(s) ~ SE(s^2) / (2 s).
    std_se = ((fourth - variance.pow(2)).clamp(min=0) / draws).sqrt() / (2 * std).clamp(
        min=torch.finfo(torch.float64).tiny
    )
    return PosteriorMoments(
        mean=mean.float(),
        std=std.float(),
        mean_se=(std / math.sqrt(draws)).float(),
        std_se=std_se.float(),
        draws=draws,
    )
