"""Imputation of missing values from a VAE: the posterior predictive p(x_mis | x_obs).

With z drawn from the guide q(z|x_obs) (the encoder reads the observed values
and, for a run trained on incomplete data, their mask), the imputed mean is
E[E[x_mis|z]] and the per-value variance E[Var(x_mis|z)] + Var(E[x_mis|z]).
``refine="sir"`` corrects q toward the exact posterior p(z|x_obs) by
self-normalized importance sampling with weights p(x_obs, z) / q(z|x_obs) for
the moments and by sampling-importance-resampling (Rubin 1987) for the draws,
as in Mattei & Frellsen (2019), "MIWAE: Deep generative modelling and
imputation of incomplete data sets". A multiple imputation is one draw
x_mis ~ p(x_mis|z) with the observed values kept (Rubin 1987).

Every per-value mean carries its Monte Carlo standard error (the spread of
E[x|z] over the draws: the sample standard deviation over sqrt(K) for plain
draws, the delta-method standard error of the self-normalized estimator for
``sir``), and :func:`score_imputation` reports RMSE and interval coverage with
standard errors over data points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import pyro
import torch
from pyro.distributions import Categorical

from pyrovae.errors import ConfigError, DataError
from pyrovae.model.vae import VAE
from pyrovae.runtime import eval_mode

Refine = Literal["none", "sir"]
REFINES: tuple[str, ...] = ("none", "sir")
#: Draws of z per data point by default: enough for the 5% and 95% quantiles.
DEFAULT_PARTICLES = 100
#: The central interval whose coverage is reported.
INTERVAL = 0.9


@dataclass
class Imputation:
    """Imputed data, each tensor of the input's shape ``(N, *data_shape)``.

    Attributes
    ----------
    mean
        The data with every missing value replaced by its posterior-predictive mean.
    std
        The posterior-predictive standard deviation of each value (0 where observed).
    lower, upper
        The central :data:`INTERVAL` predictive interval of each value, from
        the (resampled) draws; the observed value where observed.
    draws
        ``(M, N, *data_shape)`` multiple imputations (observed values kept), or
        ``None`` when none were asked for.
    mean_mc_stderr
        The Monte Carlo standard error of each imputed mean (0 where observed).
    observed
        True where the input held a value.
    ess
        ``(N,)`` effective sample size of the importance weights (the number of
        draws for ``refine="none"``).
    particles
        Draws of z per data point.
    refine
        ``"none"`` or ``"sir"``.
    """

    mean: torch.Tensor
    std: torch.Tensor
    lower: torch.Tensor
    upper: torch.Tensor
    draws: torch.Tensor | None
    mean_mc_stderr: torch.Tensor
    observed: torch.Tensor
    ess: torch.Tensor
    particles: int
    refine: str


def check_incomplete(x: torch.Tensor, what: str) -> torch.Tensor:
    """The mask of observed values of ``x`` (NaN is missing); a one-line error for
    inf or a data point with no observed value."""
    if not x.dtype.is_floating_point:
        raise DataError(f"{what} has dtype {x.dtype}; missing values need floats (NaN)")
    if bool(torch.isinf(x).any()):
        raise DataError(f"{what} holds inf values; only NaN marks a missing value")
    observed = ~torch.isnan(x)
    empty = ~observed.flatten(1).any(1)
    if bool(empty.any()):
        first = int(empty.nonzero()[0, 0])
        raise DataError(
            f"{what}: data point {first} has every value missing ({int(empty.sum())} such "
            "points); nothing to condition on: drop them"
        )
    return observed


def posterior(
    vae: VAE, x: torch.Tensor, observed: torch.Tensor
) -> torch.distributions.Distribution:
    """q(z|x_obs): a run trained on incomplete data reads the values and the mask; a run
    trained on complete data reads the missing values as 0 (the importance weights
    of ``refine="sir"`` correct that guess)."""
    if vae.missing:
        return vae.qz(torch.where(observed, x, torch.nan))
    return vae.qz(torch.where(observed, x, 0.0))


@torch.no_grad()
def impute_batch(
    vae: VAE,
    x: torch.Tensor,
    *,
    particles: int = DEFAULT_PARTICLES,
    draws: int = 0,
    refine: Refine = "none",
) -> Imputation:
    """:class:`Imputation` of a batch ``x`` ``(B, *data_shape)`` holding NaN where missing."""
    if refine not in REFINES:
        raise ConfigError(f"--refine must be one of {', '.join(REFINES)}, got {refine!r}")
    if particles < 2 or draws < 0:
        raise ConfigError(
            f"need at least 2 particles and 0 or more draws, got {particles}, {draws}"
        )
    if not vae.likelihood.maskable:  # its mean and draws would ignore the observed values
        raise ConfigError(f"cannot impute with this run: {vae.likelihood.unmaskable()}")
    observed = check_incomplete(x, "the input")
    # A binary likelihood scores observed intensities in [0, 1] by their cross-entropy, as
    # a soft observation, rather than refuse them as outside {0, 1}.
    with eval_mode(vae), pyro.validation_enabled(not vae.likelihood.binary):
        qz = posterior(vae, x, observed)
        z = qz.sample((particles,))  # (K, B, n_latent)
        px = vae.px(z)  # batch (K, B)
        means, variances = px.mean, px.variance  # (K, B, *data_shape)
        if refine == "sir":
            log_w = vae.log_joint(x, z, observed) - qz.log_prob(z)  # (K, B)
            weights = torch.softmax(log_w.double(), dim=0).to(x.dtype)
        else:
            weights = torch.full(z.shape[:2], 1.0 / particles, dtype=x.dtype, device=x.device)
        w = weights.reshape(*weights.shape, *(1,) * (x.dim() - 1))  # (K, B, 1, ...)
        mean = (w * means).sum(0)
        variance = (w * (variances + means.square())).sum(0) - mean.square()
        stderr = _mc_stderr(means, mean, w, refine)
        # Predictive draws: one x per z, resampled by the weights for SIR.
        index = _resample(weights, particles) if refine == "sir" else None
        samples = _pick(px.sample(), index)  # (K, B, *data_shape)
    samples = torch.where(observed, x, samples)
    low, high = (_quantile(samples, (1 + sign * INTERVAL) / 2) for sign in (-1, 1))
    keep = torch.where(observed, x, mean)
    zero = torch.zeros_like(x)
    return Imputation(
        mean=keep,
        std=torch.where(observed, zero, variance.clamp(min=0).sqrt()),
        lower=low,
        upper=high,
        draws=samples[:draws] if draws else None,
        mean_mc_stderr=torch.where(observed, zero, stderr),
        observed=observed,
        ess=1.0 / weights.square().sum(0),
        particles=particles,
        refine=refine,
    )


def _mc_stderr(
    means: torch.Tensor, mean: torch.Tensor, w: torch.Tensor, refine: str
) -> torch.Tensor:
    """Monte Carlo standard error of the (self-normalized) weighted mean of ``means``."""
    k = means.shape[0]
    if refine == "sir":  # delta method for a ratio estimator: sqrt(sum w^2 (m - mean)^2)
        return (w.square() * (means - mean).square()).sum(0).sqrt()
    return means.std(0) / math.sqrt(k)


def _quantile(samples: torch.Tensor, q: float) -> torch.Tensor:
    """The ``q`` quantile over dim 0, interpolated linearly as ``torch.quantile`` (which
    refuses inputs of more than 2**24 values)."""
    ordered = samples.sort(dim=0).values
    position = q * (samples.shape[0] - 1)
    below, frac = int(math.floor(position)), position - math.floor(position)
    above = min(below + 1, samples.shape[0] - 1)
    return ordered[below] + frac * (ordered[above] - ordered[below])


def _resample(weights: torch.Tensor, n: int) -> torch.Tensor:
    """``(n, B)`` indices drawn from each point's weights ``(K, B)``."""
    return Categorical(probs=weights.T).sample((n,))  # (n, B)


def _pick(samples: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
    if index is None:
        return samples
    batch = torch.arange(samples.shape[1], device=samples.device)
    return samples[index, batch]  # (n, B, *data_shape)


def impute(
    vae: VAE,
    x: torch.Tensor,
    *,
    particles: int = DEFAULT_PARTICLES,
    draws: int = 0,
    refine: Refine = "none",
    batch_size: int = 256,
    progress: bool = False,
) -> Imputation:
    """:func:`impute_batch` over ``x`` ``(N, *data_shape)``, ``batch_size`` points at a
    time; ``progress`` shows a bar of points on stderr."""
    from tqdm.auto import tqdm

    starts = range(0, x.shape[0], batch_size)
    bar = tqdm(total=x.shape[0], desc="imputing", unit="point", leave=False,
               disable=None if progress else True)  # fmt: skip
    parts = []
    for i in starts:
        batch = x[i : i + batch_size]
        parts.append(impute_batch(vae, batch, particles=particles, draws=draws, refine=refine))
        bar.update(batch.shape[0])
    bar.close()

    def cat(name: str, dim: int = 0) -> torch.Tensor:
        return torch.cat([getattr(part, name) for part in parts], dim=dim)

    return Imputation(
        mean=cat("mean"),
        std=cat("std"),
        lower=cat("lower"),
        upper=cat("upper"),
        draws=cat("draws", dim=1) if draws else None,
        mean_mc_stderr=cat("mean_mc_stderr"),
        observed=cat("observed"),
        ess=cat("ess"),
        particles=particles,
        refine=refine,
    )


@dataclass
class ImputationScore:
    """How close an imputation is to the truth, over the missing values.

    ``rmse`` is the root mean squared error of the imputed means, ``coverage``
    the share of true values inside the :data:`INTERVAL` interval; each with its
    standard error over data points (the points are the independent units: the
    values of one point are not), which also holds the Monte Carlo noise of
    the imputation. ``mean_mc_stderr`` is the mean Monte Carlo standard error of
    the imputed values.
    """

    rmse: float
    rmse_stderr: float
    coverage: float
    coverage_stderr: float
    n_missing: int
    n_points: int
    mean_mc_stderr: float
    interval: float = INTERVAL

    def to_dict(self) -> dict[str, float | int]:
        return dict(self.__dict__)


def score_imputation(imputation: Imputation, truth: torch.Tensor) -> ImputationScore:
    """RMSE and interval coverage of ``imputation`` against ``truth`` (same shape)."""
    observed = imputation.observed
    rmse, rmse_se = rmse_over_missing(imputation.mean, truth, observed)
    inside = (imputation.lower <= truth) & (truth <= imputation.upper)
    coverage, coverage_se = mean_over_missing(inside.double(), observed)
    mc_stderr, _ = mean_over_missing(imputation.mean_mc_stderr.double(), observed)
    missing = (~observed).flatten(1)
    return ImputationScore(
        rmse=rmse,
        rmse_stderr=rmse_se,
        coverage=coverage,
        coverage_stderr=coverage_se,
        n_missing=int(missing.sum()),
        n_points=int(missing.any(1).sum()),
        mean_mc_stderr=mc_stderr,
    )


def rmse_over_missing(
    filled: torch.Tensor, truth: torch.Tensor, observed: torch.Tensor
) -> tuple[float, float]:
    """RMSE of ``filled`` against ``truth`` over the values not ``observed``, and its
    standard error over data points (delta method from that of the mean squared error)."""
    mse, mse_se = mean_over_missing((filled - truth).double().square(), observed)
    rmse = math.sqrt(mse)
    return rmse, mse_se / (2 * rmse) if rmse > 0 else 0.0


def mean_over_missing(values: torch.Tensor, observed: torch.Tensor) -> tuple[float, float]:
    """The mean of ``values`` over the missing entries, with its standard error over the
    data points that have missing entries (each point one unit: a ratio estimator)."""
    missing = (~observed).flatten(1).double()  # (N, D)
    points = missing.sum(1) > 0
    totals = torch.where(missing > 0, values.flatten(1).double(), 0.0)[points].sum(1)
    return _ratio(totals, missing[points].sum(1))


def _ratio(totals: torch.Tensor, counts: torch.Tensor) -> tuple[float, float]:
    """sum(totals) / sum(counts) and its standard error over points (a ratio estimator)."""
    n = totals.shape[0]
    if n == 0:
        return math.nan, math.nan
    ratio = float(totals.sum() / counts.sum())
    if n < 2:
        return ratio, math.nan
    residual = totals - ratio * counts
    var = float(residual.square().sum()) / (n * (n - 1)) / float(counts.mean()) ** 2
    return ratio, math.sqrt(var)
