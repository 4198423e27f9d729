"""Pareto-smoothed importance sampling diagnostic of q(z|x).

Yao, Vehtari, Simpson & Gelman (2018), "Yes, but did it work?: Evaluating
variational inference": the Pareto shape k̂ of the upper tail of the
importance ratios p(x, z) / q(z|x) (:func:`arviz.psislw`) says whether q
covers the posterior: k̂ < 0.5 good, 0.5-0.7 usable with Pareto smoothing,
> 0.7 q is unreliable as an approximation or proposal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from pyrovae.errors import ConfigError

if TYPE_CHECKING:
    pass


#: Yao et al. (2018): below this k̂ importance sampling with q is reliable.
KHAT_GOOD = 0.5

#: Above this k̂ neither q nor PSIS on q can be trusted.
KHAT_BAD = 0.7

#: Log-weights whose spread is within this many units of round-off of the log
#: densities they come from are equal: the proposal is the posterior.
ROUNDOFF_ULPS = 1024


#: Fewest draws a k̂ is reported from: ArviZ fits the Pareto tail to the largest
#: min(S/5, 3 sqrt(S)) ratios and returns inf below 5 of them (S < 25), and up to about
#: 100 draws k̂ is noise (1.7 at S = 25, 0.7 at S = 30 for well-behaved Gaussian ratios).
MIN_PSIS_DRAWS = 100


def roundoff_tolerance(
    log_joint: torch.Tensor, log_r: torch.Tensor, precision: torch.dtype | None = None
) -> np.ndarray:
    """Per data point, the spread of log p(x, z) - log r(z) that round-off alone can make.

    ``ROUNDOFF_ULPS`` units of round-off of ``precision`` (default the terms' dtype;
    the parameters' dtype when the terms were computed more precisely than the
    parameters are stored), relative to the terms' size: max over draws of
    |log p(x, z)| + |log r(z)|, both ``(draws, datapoints)``. A float32 sum over
    784 pixels loses about 100 units; float32 parameters, rounded, move a
    float64 computation by about one.
    """
    eps = torch.finfo(precision or log_joint.dtype).eps
    size = (log_joint.double().abs() + log_r.double().abs()).amax(0)  # (datapoints,)
    return np.asarray((ROUNDOFF_ULPS * eps * size).cpu())


def psis_khat(
    log_weights: torch.Tensor | np.ndarray, roundoff: np.ndarray | float | None = None
) -> np.ndarray:
    """Pareto k̂ of the importance ratios of each data point; NaN where they are equal.

    Parameters
    ----------
    log_weights
        ``(draws, datapoints)`` log importance ratios log p(x, z) - log r(z).
    roundoff
        Per data point (or one for all), the spread below which the ratios count as
        equal up to round-off (:func:`roundoff_tolerance`). Default: ``ROUNDOFF_ULPS``
        units of round-off of ``log_weights``' dtype relative to their size, right
        when they were computed in that dtype.

    Returns
    -------
    numpy.ndarray
        ``(datapoints,)``, in float64. Points whose ratios are all equal up to
        round-off (the proposal is the posterior) have no tail, only rounding
        noise, whose k̂ would be noise: they are NaN, reported as exact.
    """
    import arviz as az

    tensor = torch.as_tensor(log_weights).detach()  # weights from a VAE may carry gradients
    if roundoff is None:
        roundoff = (
            ROUNDOFF_ULPS
            * torch.finfo(tensor.dtype).eps
            * np.asarray(tensor.double().abs().amax(0).cpu())
        )
    lw = np.asarray(tensor.double().cpu()).T  # (datapoints, draws)
    if lw.ndim != 2 or lw.shape[1] < 10:
        raise ConfigError("PSIS needs log-weights of shape (draws, datapoints) with >= 10 draws")
    exact = np.ptp(lw, axis=1) <= np.broadcast_to(roundoff, lw.shape[:1])
    khat = np.full(lw.shape[0], np.nan)
    if not exact.all():
        _, tail = az.psislw(lw[~exact])
        khat[~exact] = np.atleast_1d(np.asarray(tail, dtype=float))
    return khat


def khat_shares(khat: np.ndarray) -> dict[str, float]:
    """Shares of points that are exact (NaN k̂), good (k̂ < 0.5), usable (0.5-0.7) and bad
    (> 0.7)."""
    khat = np.asarray(khat, dtype=float)
    return {
        "exact": float(np.mean(np.isnan(khat))),
        "good": float(np.mean(khat < KHAT_GOOD)),
        "usable": float(np.mean((khat >= KHAT_GOOD) & (khat <= KHAT_BAD))),
        "bad": float(np.mean(khat > KHAT_BAD)),
    }
