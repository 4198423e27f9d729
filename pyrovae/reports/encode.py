"""Encode data points as features: the mean and standard deviation of q(z|x).

The posterior mean E_q[z|x] is the usual feature of a VAE for another task
(Kingma et al. 2014, "Semi-Supervised Learning with Deep Generative Models",
M1). Points are checked first (shape, finite values, the likelihood's support)
so that a wrong array is a one-line :class:`~pyrovae.errors.DataError`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from pyrovae.data.pixels import check_finite_unit_interval, to_unit_float
from pyrovae.errors import DataError
from pyrovae.files import atomic_write
from pyrovae.inference.moments import DEFAULT_DRAWS, PosteriorMoments, posterior_moments
from pyrovae.model.vae import VAE
from pyrovae.runtime import eval_mode, module_device, progress_bar

#: Elements of z drawn at once for a sampled guide (draws x batch x n_latent), to bound memory.
_SAMPLED_ELEMENTS = 1 << 22


@dataclass
class Encoding:
    """Posterior moments of ``N`` points, on the CPU.

    Attributes
    ----------
    mean, std
        E_q[z|x] and the standard deviations of q(z|x), ``(N, n_latent)``.
    labels
        The points' class labels ``(N,)``, where the data have them.
    mean_se, std_se
        Monte Carlo standard errors of ``mean`` and ``std`` for a guide whose
        moments are estimated from ``draws`` samples (flow guides); ``None``
        where they are closed form.
    draws
        Draws of q(z|x) per point behind the estimates; ``None`` if closed form.
    """

    mean: torch.Tensor
    std: torch.Tensor
    labels: torch.Tensor | None = None
    mean_se: torch.Tensor | None = None
    std_se: torch.Tensor | None = None
    draws: int | None = None

    @property
    def method(self) -> str:
        """How the moments were computed, in words (for the output and the ``.npz``)."""
        if self.draws is None:
            return "closed form"
        return f"Monte Carlo, {self.draws} draws of q(z|x) per point"

    def describe(self) -> str:
        """One line: how many points, how, and the largest Monte Carlo error."""
        n, n_latent = self.mean.shape
        text = f"{n} points, {n_latent} latent dimensions, moments of q(z|x): {self.method}"
        if self.mean_se is not None and self.std_se is not None and n:
            text += (
                f" (largest standard error: {float(self.mean_se.max()):.2g} on a mean, "
                f"{float(self.std_se.max()):.2g} on a std)"
            )
        return text

    def arrays(self) -> dict[str, Any]:
        """The arrays of the ``.npz``: ``mean``, ``std``, ``labels`` where known, the
        standard errors and ``draws`` for sampled moments, and ``method``."""
        out: dict[str, Any] = {
            "mean": self.mean.numpy(),
            "std": self.std.numpy(),
            "method": np.str_(self.method),
        }
        if self.labels is not None:
            out["labels"] = self.labels.numpy()
        if self.mean_se is not None and self.std_se is not None and self.draws is not None:
            out["mean_se"] = self.mean_se.numpy()
            out["std_se"] = self.std_se.numpy()
            out["draws"] = np.int64(self.draws)
        return out

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`arrays` as an ``.npz`` at exactly ``path`` (atomically)."""
        arrays = self.arrays()

        def write(handle: IO[bytes]) -> None:
            np.savez(handle, allow_pickle=False, **arrays)

        return atomic_write(path, write)


def non_finite_reason(missing: bool) -> str:
    """What is wrong with non-finite points, for a run that takes missing values
    (``missing``: NaN is one) or not."""
    if missing:
        return "has infinite values (NaN marks a missing value; infinity is no value)"
    return (
        "has NaN or infinite values (NaN is a missing value only for a run trained on data "
        "with missing values)"
    )


def check_points(x: torch.Tensor, vae: VAE, what: str) -> torch.Tensor:
    """``x`` as ``(N, *data_shape)`` points the run can encode, or a one-line DataError.

    Flat rows ``(N, D)`` are reshaped when ``D`` is the size of one data point;
    values must be finite and, for a likelihood with a bounded support (binary
    and continuous Bernoulli: [0, 1]), inside it; NaN is a missing value for a
    VAE trained on incomplete data (``vae.missing``: its encoder reads the mask).
    """
    shape = vae.data_shape
    if x.dim() == 2 and x.shape[1] == math.prod(shape) and len(shape) > 1:
        x = x.reshape(x.shape[0], *shape)
    if tuple(x.shape[1:]) != shape:
        raise DataError(
            f"{what} holds points of shape {tuple(x.shape[1:])}, but the run models points of "
            f"shape {shape} (or flat rows of {math.prod(shape)} values)"
        )
    if x.shape[0] == 0:
        raise DataError(f"{what} holds no points")
    points = x
    if x.dtype.is_floating_point:
        bad = torch.isinf(x) if vae.missing else ~torch.isfinite(x)
        if bool(bad.any()):
            first = int(bad.flatten(1).any(1).nonzero()[0, 0])
            raise DataError(
                f"{what} {non_finite_reason(vae.missing)} (first in point {first}); repair them"
            )
        if vae.missing:  # the observed values are checked
            x = torch.nan_to_num(x, nan=0.0)
    if vae.likelihood.binary:
        check_finite_unit_interval(x, f"{what} (for a binary likelihood)")
        return points
    with torch.no_grad(), eval_mode(vae):
        support = vae.px(torch.zeros(1, vae.n_latent, device=module_device(vae))).support
    if support is None:  # a likelihood that states no support takes any finite value
        return points
    ok = support.check(to_unit_float(x).to(module_device(vae)))
    if not bool(ok.all()):
        first = int((~ok).reshape(x.shape[0], -1).any(1).nonzero()[0, 0])
        raise DataError(
            f"{what} has values outside the likelihood's support ({support}; first in point "
            f"{first}); scale the data as the run's training data were"
        )
    return points


@torch.no_grad()
def encode_points(
    vae: VAE,
    x: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    draws: int = DEFAULT_DRAWS,
    batch_size: int = 256,
    progress: bool = False,
) -> Encoding:
    """The moments of q(z|x) for every point of ``x`` ``(N, *data_shape)``
    (:func:`pyrovae.inference.moments.posterior_moments`), batch by batch."""
    device = module_device(vae)
    if not vae.amortized_guide.head_class.has_closed_form_mean:
        batch_size = max(1, min(batch_size, _SAMPLED_ELEMENTS // (max(draws, 1) * vae.n_latent)))
    starts = range(0, x.shape[0], batch_size)
    parts: list[PosteriorMoments] = []
    with eval_mode(vae):
        for start in progress_bar(starts, "encoding", progress, unit="batch"):
            batch = to_unit_float(x[start : start + batch_size].to(device))
            parts.append(posterior_moments(vae.qz(batch), draws))
    return _joined(parts, None if labels is None else labels.cpu())


def _joined(parts: list[PosteriorMoments], labels: torch.Tensor | None) -> Encoding:
    def cat(name: str) -> torch.Tensor | None:
        values = [getattr(part, name) for part in parts]
        return None if values[0] is None else torch.cat(values).cpu()

    mean, std = cat("mean"), cat("std")
    assert mean is not None and std is not None
    return Encoding(mean, std, labels, cat("mean_se"), cat("std_se"), parts[0].draws)
