"""Data passed from Python: tensors, NumPy arrays, Datasets and DataLoaders.

``pyrovae.train(data=X)`` takes points of any shape ``(N, ...)``: images
``(N, C, H, W)`` or ``(N, H, W)`` (read as one channel, as ``.npy`` files
are), vectors ``(N, D)``, or anything else a network takes. They get the
checks a file's data get (dtype, empty data, empty points, missing values,
NaN/inf); the checks that depend on the likelihood (values in [0, 1] for a
binary one, the likelihood's support) run in :mod:`pyrovae.data.prepare`.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from pyrovae.data.dataset import MEMORY, ArrayData, random_split
from pyrovae.data.pixels import check_float32_range, to_unit_float
from pyrovae.errors import ConfigError, DataError

#: What ``data=`` and ``test_data=`` accept.
DataSource = torch.Tensor | np.ndarray | Dataset | DataLoader


def from_python(
    data: Any, test_data: Any = None, *, val_fraction: float = 0.1, seed: int = 0
) -> ArrayData:
    """An :class:`ArrayData` of the points in ``data`` (and ``test_data``), checked.

    Parameters
    ----------
    data
        A tensor (dense or sparse) or NumPy array ``(N, ...)``, or a SciPy sparse
        matrix ``(N, D)``; a :class:`torch.utils.data.Dataset`
        whose items are a tensor/array or an ``(x, label)`` pair; or a
        :class:`~torch.utils.data.DataLoader`, of which only the dataset is
        used (batch size, shuffling, sampler and workers are the run's own).
    test_data
        The held-out points, in any of the same kinds. Without it
        ``val_fraction`` of ``data`` is held out, chosen with ``seed``.
    val_fraction
        Share of ``data`` held out for test when ``test_data`` is not given,
        in [0, 1).
    seed
        Seed of that split (the run's seed).

    Raises
    ------
    DataError
        Data of a kind or dtype that cannot be read, empty data or empty
        points, missing (masked) values, NaN or infinite values, or train and
        test points of different shapes. The message is one line.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
    train, train_labels = to_points(data, "data")
    if test_data is None:
        split = random_split(MEMORY, train, train_labels, seed, val_fraction)
        if split.test.shape[0] == 0:
            raise DataError(
                f"data holds {split.train.shape[0]} point(s): nothing is left to test on; "
                "pass more data, test_data=, or a larger val_fraction"
            )
        return split
    test, test_labels = to_points(test_data, "test_data")
    if test.shape[1:] != train.shape[1:]:
        raise DataError(
            f"test_data points have shape {tuple(test.shape[1:])} but data points have "
            f"{tuple(train.shape[1:])}; both must have one shape"
        )
    if test.dtype != train.dtype:  # uint8 pixels in one split, floats in the other
        train, test = to_unit_float(train), to_unit_float(test)
    return ArrayData(MEMORY, train, test, train_labels, test_labels)


def to_points(source: Any, what: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The points ``(N, ...)`` of one source, as uint8 or float32 on the CPU, and labels."""
    if isinstance(source, DataLoader):
        source = source.dataset
    labels = None
    if isinstance(source, (torch.Tensor, np.ndarray)) or _is_sparse_matrix(source):
        points = _as_array(source, what)
    elif isinstance(source, Dataset):
        points, labels = _from_dataset(source, what)
    else:
        raise DataError(
            f"{what}= must be a torch tensor, a NumPy array, a torch Dataset or a DataLoader, "
            f"got {type(source).__name__}"
        )
    return _checked(points, what), labels


def _as_array(x: Any, what: str) -> np.ndarray:
    """``x`` as a NumPy array: sparse tensors and SciPy sparse matrices made dense."""
    if isinstance(x, torch.Tensor):
        if x.is_meta:
            raise DataError(f"{what} is a tensor on the meta device, which holds no values")
        x = x.detach().cpu()
        if x.layout != torch.strided:  # sparse COO/CSR/...: the points, dense
            x = x.to_dense()
        if x.is_quantized:
            x = x.dequantize()
        if x.dtype == torch.bfloat16:  # NumPy has no bfloat16
            x = x.float()
        return x.numpy()
    if isinstance(x, np.ma.MaskedArray):
        return _unmasked(x, what)
    if _is_sparse_matrix(x):
        x = x.toarray()
    return np.asarray(x)


def _is_sparse_matrix(x: Any) -> bool:
    """Whether ``x`` is a SciPy sparse matrix or array (without importing SciPy)."""
    return type(x).__module__.startswith("scipy.sparse") and callable(getattr(x, "toarray", None))


def _unmasked(x: np.ma.MaskedArray, what: str) -> np.ndarray:
    """A masked array's data, or a :class:`DataError` naming the first point with masked values."""
    mask = np.ma.getmaskarray(x).reshape(x.shape[0], -1) if x.ndim else np.ma.getmaskarray(x)
    if mask.any():
        first = int(np.flatnonzero(mask.any(axis=1))[0])
        how = "is fully masked" if mask[first].all() else "has masked values"
        raise DataError(
            f"{what}: point {first} {how}; missing values are not supported: "
            "drop or fill those points"
        )
    return np.asarray(x.data)


def _from_dataset(dataset: Dataset, what: str) -> tuple[np.ndarray, torch.Tensor | None]:
    """Every item of a map-style Dataset, stacked; labels where items are ``(x, label)``."""
    try:
        n = len(dataset)  # type: ignore[arg-type]
    except TypeError:
        raise DataError(
            f"{what}= is a Dataset without a length (an IterableDataset?): pass a map-style "
            "Dataset, or the points as a tensor"
        ) from None
    if n == 0:
        raise DataError(f"{what}= is an empty Dataset: the data set is empty")
    items = [dataset[i] for i in range(n)]
    # (x, label) pairs; a TensorDataset of points alone gives 1-tuples.
    if isinstance(items[0], (tuple, list)) and len(items[0]) == 1:
        items = [item[0] for item in items]
    paired = isinstance(items[0], (tuple, list))
    xs = [item[0] if paired else item for item in items]
    arrays = [_as_array(x, f"{what}[{i}]") for i, x in enumerate(xs)]
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise DataError(
            f"{what}= has items of different shapes ({', '.join(map(str, sorted(shapes)[:2]))}); "
            "all points must have one shape"
        )
    points = np.stack(arrays)
    if not paired:
        return points, None
    return points, _labels([item[1] for item in items], what)


def _labels(values: list[Any], what: str) -> torch.Tensor | None:
    try:
        labels = torch.as_tensor(np.asarray([np.asarray(v).item() for v in values]))
    except (ValueError, TypeError):
        return None  # a second element that is no class id (a target image): not labels
    if labels.dtype.is_floating_point and not bool((labels == labels.round()).all()):
        return None
    return labels.to(torch.int64)


def _checked(points: np.ndarray, what: str) -> torch.Tensor:
    """``points`` as a tensor: uint8 kept, bool and floats as float32, small integers as uint8."""
    if points.ndim < 2:
        raise DataError(
            f"{what} has shape {points.shape}; expected (N, ...) with one data point per row: "
            "reshape a single vector of N values to (N, 1)"
        )
    if points.ndim == 3:
        points = points[:, None]  # (N, H, W) images: one channel, as .npy files are read
    if points.shape[0] == 0:
        raise DataError(f"{what} holds 0 points (shape {points.shape}): the data set is empty")
    if 0 in points.shape[1:]:
        raise DataError(f"{what}: points of shape {points.shape[1:]} hold no values")
    kind = points.dtype.kind
    if kind not in "biuf":
        raise DataError(f"{what}: unsupported dtype {points.dtype}; expected numbers")
    points = np.ascontiguousarray(points, dtype=points.dtype.newbyteorder("="))
    if kind in "iu" and points.dtype != np.uint8:
        lo, hi = int(points.min()), int(points.max())
        if lo < 0 or hi > 255:
            raise DataError(
                f"{what}: integers run from {lo} to {hi}; pass floats, or uint8 pixels in 0..255"
            )
        if hi == 1:  # as the file reader says it
            warnings.warn(
                f"{what}: integers are all 0 or 1 but are read as 0..255 pixels, where 1 is "
                "nearly black; pass binary images as bool or float",
                UserWarning,
                stacklevel=4,
            )
        points = points.astype(np.uint8)
    if kind in "bf":
        # Checked in the source precision, so a huge float64 is reported as such, not as inf.
        if kind == "f":
            _check_finite(points, what)
            check_float32_range(points, what)
        points = points.astype(np.float32)
    return torch.from_numpy(points)


def _check_finite(points: np.ndarray, what: str) -> None:
    # NaN marks a missing value (pyrovae.data.missing); inf is no value at all.
    bad = np.isinf(points.reshape(points.shape[0], -1))
    if bad.any():
        first = int(np.argmax(bad.any(axis=1)))
        raise DataError(
            f"{what} has {int(bad.sum())} inf values (first in point {first}); "
            "remove or repair those points before training (NaN marks a missing value)"
        )
