"""Incomplete data: NaN marks a missing value.

A data set may hold NaN where a value was not observed (the missing-data VAE
of Mattei & Frellsen 2019, "MIWAE", and Nazabal et al. 2020, "Handling
incomplete heterogeneous data using VAEs"). The likelihood then scores the
observed values only and the encoder reads the observed values and the mask
(:mod:`pyrovae.model.vae`). These helpers find, check and binarize such data;
of complete data, the training loop passes them only through
:func:`draw_binary_batch`, which hands them to ``draw_binary``.
"""

from __future__ import annotations

import torch

from pyrovae.data.dataset import ArrayData, source_row
from pyrovae.data.pixels import draw_binary
from pyrovae.errors import DataError

#: Rows checked at once, so that memory stays bounded on large sets.
_CHUNK_ROWS = 4096


def has_missing(x: torch.Tensor) -> bool:
    """Whether ``x`` holds any NaN (never for integer pixels, which cannot)."""
    if not x.dtype.is_floating_point:
        return False
    return any(
        bool(torch.isnan(x[i : i + _CHUNK_ROWS]).any()) for i in range(0, len(x), _CHUNK_ROWS)
    )


def check_observed_rows(x: torch.Tensor, what: str, rows: torch.Tensor | None = None) -> None:
    """Refuse a data point with no observed value: nothing to condition on.

    Raises
    ------
    DataError
        Naming the first such point and how many there are.
    """
    if not x.dtype.is_floating_point or x.shape[0] == 0:
        return
    empty = torch.cat(
        [
            torch.isnan(x[i : i + _CHUNK_ROWS]).flatten(1).all(1)
            for i in range(0, len(x), _CHUNK_ROWS)
        ]
    )
    n_empty = int(empty.sum())
    if n_empty:
        first = int(empty.nonzero()[0, 0])
        raise DataError(
            f"{what} has {n_empty} point(s) with every value missing (NaN), first at index "
            f"{first}{source_row(rows, first)}; drop them: a point with no observed value "
            "carries no information"
        )


def observed_mask(x: torch.Tensor) -> torch.Tensor:
    """True where ``x`` holds a value, False where it is missing (NaN)."""
    return ~torch.isnan(x)


def bernoulli_observed(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Bernoulli draws of the intensities ``x`` in [0, 1], missing values kept missing."""
    observed = observed_mask(x)
    draws = torch.bernoulli(torch.where(observed, x, 0.0), generator=generator)
    return torch.where(observed, draws, torch.nan)


def draw_binary_observed(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Dynamic binarization of incomplete data: :func:`~pyrovae.data.pixels.draw_binary`
    of the intensities ``x`` in [0, 1], missing values (NaN) kept missing.

    The same law as :func:`bernoulli_observed`, at ``draw_binary``'s speed;
    training draws each batch with it. ``bernoulli_observed`` stays for the
    fixed binarizations of prepared data, whose random stream it keeps.
    """
    return draw_binary(x, generator).masked_fill_(torch.isnan(x), torch.nan)


def draw_binary_batch(x: torch.Tensor, missing: bool) -> torch.Tensor:
    """Dynamic binarization of a training batch: :func:`draw_binary_observed` when
    the model was built for missing values (``missing``), else
    :func:`~pyrovae.data.pixels.draw_binary`, which scans no batch for NaN.

    Decided by the model's flag, not the batch, so that no step waits on a
    device-to-host read to learn whether a batch has a missing value.
    """
    return draw_binary_observed(x) if missing else draw_binary(x)


def data_has_missing(data: ArrayData) -> bool:
    """Whether the training or test points in memory hold a missing value."""
    return any(isinstance(x, torch.Tensor) and has_missing(x) for x in (data.train, data.test))
