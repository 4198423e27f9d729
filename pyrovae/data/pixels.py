"""Pixel tensors: conversion to the [0, 1] scale and the checks every data set passes.

Pixels are kept as found, ``uint8`` 0..255 or ``float32`` (in [0, 1] for a
binary likelihood; of any finite value for a Gaussian), so MNIST takes a
quarter of the memory of floats; :func:`to_unit_float` converts one
batch at a time on the device. The checks run once, before training, in
slices along dim 0 so memory stays bounded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from pyrovae.data.dataset import source_row
from pyrovae.errors import DataError

# Elementwise checks run over slices of dim 0 of about this many elements, so
# checking a large float set on the GPU never doubles its memory.
_CHUNK_ELEMENTS = 1 << 24


def _check_pixel_dtype(x: torch.Tensor) -> None:
    if x.dtype in (torch.uint8, torch.bool) or x.dtype.is_floating_point:
        return
    raise DataError(
        f"cannot read a tensor of dtype {x.dtype} as pixels: "
        "expected uint8 (0..255), bool, or float"
    )


def _row_chunks(x: torch.Tensor) -> list[tuple[int, torch.Tensor]]:
    """Slices of ``x`` along dim 0 of about ``_CHUNK_ELEMENTS`` elements each."""
    rows = x.reshape(1) if x.dim() == 0 else x
    per_row = max(1, rows[0].numel()) if rows.shape[0] else 1
    step = max(1, _CHUNK_ELEMENTS // per_row)
    return [(start, rows[start : start + step]) for start in range(0, rows.shape[0], step)]


def to_unit_float(x: torch.Tensor) -> torch.Tensor:
    """Convert pixels to ``float32`` on the [0, 1] scale.

    ``uint8`` is divided by 255 (as torchvision's ``ToTensor``), ``bool``
    becomes 0.0/1.0, and floats are cast to ``float32`` (no copy if they
    already are). Works on any shape and on any device.

    Parameters
    ----------
    x
        Pixels, e.g. a batch ``(B, C, H, W)``.

    Returns
    -------
    torch.Tensor
        ``float32`` tensor of the same shape on the same device.

    Raises
    ------
    DataError
        If ``x`` has another dtype (e.g. ``int64``), which has no pixel scale.
    """
    _check_pixel_dtype(x)
    if x.dtype == torch.uint8:
        return x.to(torch.float32).div_(255.0)
    return x.to(torch.float32)


def draw_binary(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One Bernoulli(x) draw per value of the intensities ``x`` in [0, 1] (dynamic
    binarization): 1.0 where a uniform draw on [0, 1) falls below the intensity,
    else 0.0, in ``x``'s dtype and shape.

    The same law as :func:`torch.bernoulli`, faster on a CPU, where that draws
    one value at a time: 0.6 ms against 1.4 ms for a batch of 256 Fashion-MNIST
    images on one thread, which made a training step of the MLP VAE 6% faster
    (``benchmarks/train_throughput.py --ablation``, docs/benchmarks.md). NaN
    draws 0.0.
    """
    u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return u.lt_(x)


def check_finite_unit_interval(
    x: torch.Tensor, what: str, *, missing: bool = False, likelihood: str | None = None
) -> None:
    """Check that pixels are usable: non-empty, finite, and within [0, 1].

    Values are judged on the :func:`to_unit_float` scale, so ``uint8`` and
    ``bool`` tensors pass as long as they are non-empty. Runs on the tensor's
    device, in slices along dim 0 so memory stays bounded.

    Parameters
    ----------
    x
        Pixels, any shape; dim 0 is reported as the image index.
    what
        What ``x`` is, for the message (e.g. ``"train images of data.npy"``).
    missing
        Accept NaN as a missing value (:mod:`pyrovae.data.missing`); inf is
        refused either way.
    likelihood
        The likelihood that needs [0, 1], named in the message (which then
        points to a Gaussian for values of any range).

    Raises
    ------
    DataError
        If ``x`` is empty, holds NaN or inf, or has values outside [0, 1].
    """
    _check_values(x, what, missing=missing, unit_interval=True, likelihood=likelihood)


def check_finite(x: torch.Tensor, what: str, *, missing: bool = False) -> None:
    """:func:`check_finite_unit_interval` without the range: any finite value.

    For data whose range only the likelihood decides (a Gaussian takes any real
    value, a Bernoulli [0, 1]): files are read with this check, and the range is
    checked once the run's likelihood is known (:mod:`pyrovae.data.prepare`).
    """
    _check_values(x, what, missing=missing, unit_interval=False)


def check_for_likelihood(
    x: torch.Tensor,
    what: str,
    unit_interval_for: str | None,
    *,
    missing: bool = False,
    rows: torch.Tensor | None = None,
) -> None:
    """:func:`check_finite_unit_interval` where ``unit_interval_for`` names a likelihood
    that needs [0, 1] (a binary one), else :func:`check_finite`; ``rows``: each point's
    row before a random split, for the message (:func:`~pyrovae.data.dataset.source_row`)."""
    unit_interval = unit_interval_for is not None
    _check_values(
        x, what, missing=missing, unit_interval=unit_interval, likelihood=unit_interval_for,
        rows=rows,
    )  # fmt: skip


def _check_values(
    x: torch.Tensor,
    what: str,
    *,
    missing: bool,
    unit_interval: bool,
    likelihood: str | None = None,
    rows: torch.Tensor | None = None,
) -> None:
    if x.numel() == 0:
        raise DataError(f"{what} is empty (shape {tuple(x.shape)}): expected at least one image")
    _check_pixel_dtype(x)
    if not x.dtype.is_floating_point:
        return
    n_nonfinite = n_outside = 0
    first_nonfinite = first_outside = -1
    for start, chunk in _row_chunks(x):
        nonfinite = torch.isinf(chunk) if missing else ~torch.isfinite(chunk)
        if unit_interval:
            outside = (chunk < 0) | (chunk > 1)  # False for NaN, so counted once
        else:
            outside = torch.zeros_like(nonfinite)
        # One device sync per chunk for both counts.
        bad, out = torch.stack([nonfinite.sum(), outside.sum()]).tolist()
        if bad and first_nonfinite < 0:
            first_nonfinite = start + _first_row(nonfinite)
        if out and first_outside < 0:
            first_outside = start + _first_row(outside)
        n_nonfinite += bad
        n_outside += out
    if n_nonfinite:
        raise DataError(
            f"{what} has {n_nonfinite} {'inf' if missing else 'NaN/inf'} values "
            f"(first at index {first_nonfinite}{source_row(rows, first_nonfinite)}); "
            "remove or repair those points first"
        )
    if n_outside:
        lo, hi = _finite_min_max(x)
        fix = "divide 0..255 data by 255 or store it as uint8"
        if likelihood is not None:
            fix = (
                f"likelihood {likelihood} needs float values in [0, 1]: {fix}, or choose "
                "likelihood gaussian, which takes any value"
            )
        else:
            fix = f"float pixels must lie in [0, 1]: {fix}"
        raise DataError(
            f"{what} has {n_outside} values outside [0, 1] (min {lo:.4g}, max {hi:.4g}, "
            f"first at index {first_outside}{source_row(rows, first_outside)}); {fix}"
        )


def check_float32_range(values: np.ndarray, what: str) -> None:
    """Refuse finite values (of a float64 or wider array) beyond float32's range, which
    the float32 data would hold as inf: one line naming the largest, not "inf values".
    inf and NaN themselves are judged where the data are checked for them."""
    magnitudes = np.abs(values[np.isfinite(values)])
    if magnitudes.size and float(magnitudes.max()) > float(np.finfo(np.float32).max):
        raise DataError(
            f"{what} has values beyond float32's range (largest magnitude "
            f"{float(magnitudes.max()):.3g}); rescale the data"
        )


def _first_row(mask: torch.Tensor) -> int:
    if mask.dim() <= 1:
        return int(mask.reshape(-1).nonzero()[0, 0])
    return int(mask.flatten(1).any(dim=1).nonzero()[0, 0])


def _finite_min_max(x: torch.Tensor) -> tuple[float, float]:
    lo, hi = math.inf, -math.inf
    for _, chunk in _row_chunks(x):
        values = chunk[~torch.isnan(chunk)]  # missing values (NaN) have no size
        if values.numel():
            lo = min(lo, float(values.amin()))
            hi = max(hi, float(values.amax()))
    return lo, hi


def is_binary(x: torch.Tensor) -> bool:
    """Whether every pixel is exactly 0 or 1 on the :func:`to_unit_float` scale.

    So ``uint8`` data is binary when its values are in {0, 255} (a ``uint8``
    1 means 1/255, nearly black), floats when in {0.0, 1.0}, and ``bool``
    always. An empty tensor is binary (vacuously, as ``torch.all``).

    Parameters
    ----------
    x
        Pixels, any shape, on any device.

    Returns
    -------
    bool
    """
    _check_pixel_dtype(x)
    if x.dtype == torch.bool:
        return True
    one = 255 if x.dtype == torch.uint8 else 1.0
    for _, chunk in _row_chunks(x):
        if not bool(((chunk == 0) | (chunk == one)).all()):
            return False
    return True


def convert_images(
    x: torch.Tensor, image_size: int | None = None, channels: int | None = None
) -> torch.Tensor:
    """Images ``(N, C, H, W)`` converted to ``channels`` and resized to ``image_size``.

    The tensor counterpart of :class:`pyrovae.data.folders.ImageReader`, for
    the named sets and array files: RGB becomes grayscale by the ITU-R 601-2
    luma (torchvision's ``rgb_to_grayscale``), grayscale becomes RGB by
    repeating its channel; the shorter side is resized to ``image_size``
    (bilinear, antialiased: values stay within the input's range) and the
    centre cropped to a square. The dtype is kept (``uint8`` is rounded).
    Runs in slices along dim 0 so that memory stays bounded.

    Parameters
    ----------
    x
        Images, ``(N, 1 or 3, H, W)``, ``uint8`` or float.
    image_size
        Side of the square output; ``None`` keeps the size.
    channels
        1 or 3; ``None`` keeps the channels.

    Returns
    -------
    torch.Tensor
        ``(N, channels, image_size, image_size)``, or ``x`` itself where
        nothing changes.
    """
    from torchvision.transforms.v2 import functional as TF

    to_gray = channels == 1 and x.shape[1] == 3
    to_rgb = channels == 3 and x.shape[1] == 1
    resize = image_size is not None and tuple(x.shape[-2:]) != (image_size, image_size)
    if not (to_gray or to_rgb or resize):
        return x
    parts = []
    for _, chunk in _row_chunks(x):
        if to_gray:
            chunk = TF.rgb_to_grayscale(chunk)
        elif to_rgb:
            chunk = chunk.expand(-1, 3, -1, -1)
        if resize:
            assert image_size is not None
            chunk = TF.center_crop(TF.resize(chunk, [image_size], antialias=True), [image_size])
        parts.append(chunk.contiguous())
    return torch.cat(parts)


def display_range(x: torch.Tensor) -> list[float] | None:
    """``[least, greatest]`` of the finite values of ``x`` on the :func:`to_unit_float`
    scale where they leave [0, 1] (data a Gaussian likelihood takes), else ``None``."""
    if not x.dtype.is_floating_point:  # uint8 (k/255) and bool lie in [0, 1]
        return None
    lo, hi = _finite_min_max(x)
    if math.isinf(lo) or (lo >= 0 and hi <= 1):  # no finite value, or all in [0, 1]
        return None
    if hi - lo <= 1e-6 * max(1.0, abs(lo)):  # one value: drawn mid-grey, not black or white
        pad = 0.5 * max(1.0, abs(lo))
        lo, hi = lo - pad, hi + pad
    return [lo, hi]


def display_values(
    images: torch.Tensor, value_range: Sequence[float] | None = None
) -> torch.Tensor:
    """``images`` as float values in [0, 1] on the CPU, to draw: ``value_range``
    ``(least, greatest)`` mapped onto [0, 1] (a run's :func:`display_range`), or with
    ``None`` as they are; either way clipped to [0, 1]."""
    images = images.detach().float().cpu()
    if value_range is not None:
        lo, hi = value_range
        images = (images - lo) / max(hi - lo, 1e-12)
    return images.clamp(0, 1)
