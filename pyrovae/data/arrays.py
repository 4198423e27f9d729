"""Images from ``.npy`` / ``.npz`` array files, validated (NaN reads as a missing value)."""

from __future__ import annotations

import struct
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from pyrovae.data.pixels import check_finite, check_float32_range
from pyrovae.errors import DataError, describe_exception

_NPZ_IMAGE_KEYS = ("x", "images", "arr_0")

_NPZ_LABEL_KEYS = ("y", "labels")

#: What numpy's readers raise on a truncated or corrupt .npy/.npz (a truncated
#: .npz is a zip without its directory; an odd one may be encrypted or use a
#: compression zipfile does not know).
_ARRAY_FILE_ERRORS = (
    OSError,
    ValueError,
    EOFError,
    zlib.error,
    zipfile.BadZipFile,
    struct.error,
    KeyError,
    RuntimeError,
    NotImplementedError,
)


def array_file_reason(exc: BaseException) -> str:
    """Why numpy could not read an array file, for a one-line error: numpy's own words,
    but not its advice to unpickle a file that holds objects (or is no numpy file)."""
    numpy_says = ("allow_pickle", "pickled data", "Python objects in dtype")
    if isinstance(exc, ValueError) and any(words in str(exc) for words in numpy_says):
        return "not an array of numbers: it holds Python objects, or is no numpy file at all"
    said = str(exc)
    if "mmap length is greater than file size" in said or "Failed to read all data" in said:
        return "it is shorter than its header says: truncated"
    return describe_exception(exc)


def read_array_file(path: Path) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """One ``(images, labels)`` part, or two if the file holds its own split."""
    try:
        loaded = np.load(path, allow_pickle=False)
    except _ARRAY_FILE_ERRORS as exc:
        raise DataError(
            f"could not read {path} ({array_file_reason(exc)}); expected a numpy .npy/.npz "
            "file of numeric arrays (no pickled objects)"
        ) from exc
    if isinstance(loaded, np.ndarray):
        return [(_images_from_array(loaded, str(path)), None)]

    with loaded:
        try:
            keys = list(loaded.files)
            arrays = {k: loaded[k] for k in keys}
        except _ARRAY_FILE_ERRORS as exc:
            raise DataError(f"could not read {path} ({array_file_reason(exc)})") from exc
    if not keys:
        raise DataError(f"{path} holds no arrays: the data set is empty")

    if "x_train" in arrays and "x_test" in arrays:
        # Keras's mnist.npz layout: keep the split it ships with.
        parts = []
        for split in ("train", "test"):
            where = f"{path}[x_{split}]"
            images = _images_from_array(arrays[f"x_{split}"], where)
            y = arrays.get(f"y_{split}")
            labels = None if y is None else _labels_from_array(y, images.shape[0], where)
            parts.append((images, labels))
        return parts

    image_key = next((k for k in _NPZ_IMAGE_KEYS if k in arrays), None)
    if image_key is None:
        rest = [k for k in keys if k not in _NPZ_LABEL_KEYS]
        if len(rest) != 1:
            raise DataError(
                f"{path} holds arrays {', '.join(keys)}: cannot tell which are the images; "
                "save them under the key 'x' (and labels under 'y')"
            )
        image_key = rest[0]
    where = f"{path}[{image_key}]"
    images = _images_from_array(arrays[image_key], where)
    label_key = next((k for k in _NPZ_LABEL_KEYS if k in arrays), None)
    labels = None
    if label_key is not None:
        labels = _labels_from_array(arrays[label_key], images.shape[0], f"{path}[{label_key}]")
    return [(images, labels)]


def check_image_layout(shape: tuple[int, ...], where: str) -> bool:
    """Refuse an array shape that holds no images; whether it is ``N x H x W x C``."""
    channels_last = False
    if len(shape) == 4 and shape[1] not in (1, 3):
        if shape[3] not in (1, 3):
            raise DataError(
                f"{where}: images of shape {shape} have {shape[1]} channels if they are "
                f"N x C x H x W, {shape[3]} if N x H x W x C; expected 1 (grayscale) or 3 (RGB)"
            )
        channels_last = True  # N x H x W x C, as PIL/matplotlib store it
    elif len(shape) not in (3, 4):
        hint = " (reshape flat N x D rows to N x H x W)" if len(shape) == 2 else ""
        raise DataError(
            f"{where}: array of shape {shape} is {len(shape)}-D; expected images as "
            f"N x H x W or N x C x H x W{hint}"
        )
    if shape[0] == 0:
        raise DataError(f"{where} holds 0 images (shape {shape}): the data set is empty")
    if 0 in shape[1:]:
        raise DataError(f"{where}: images of shape {shape} have no pixels")
    return channels_last


def _images_from_array(arr: np.ndarray, where: str) -> torch.Tensor:
    """Validate an image array and return it as ``(N, C, H, W)`` uint8 or float32."""
    if check_image_layout(arr.shape, where):
        arr = arr.transpose(0, 3, 1, 2)
    elif arr.ndim == 3:
        arr = arr[:, None]

    kind = arr.dtype.kind
    if kind not in "biuf":
        raise DataError(
            f"{where}: unsupported dtype {arr.dtype}; expected uint8, integers in 0..255, "
            "bool, or floats"
        )
    # torch.from_numpy rejects non-native byte order (e.g. '>f4' written elsewhere).
    arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("="))
    if kind == "b":
        return torch.from_numpy(arr.astype(np.float32))
    if kind in "iu":
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > 255:
            raise DataError(
                f"{where}: integer pixels run from {lo} to {hi}; expected 0..255 (or floats)"
            )
        if hi == 1:
            warnings.warn(
                f"{where}: integer pixels are all 0 or 1 but are read on the 0..255 scale, "
                "where 1 is nearly black; save binary images as bool or float",
                UserWarning,
                stacklevel=4,
            )
        return torch.from_numpy(arr.astype(np.uint8, copy=False))
    # Check in the source precision, so a huge float64 is reported as out of
    # range rather than as the inf it would become in float32 (a long double, which
    # torch has no type for, in float64).
    if arr.dtype.itemsize > 8:
        arr = arr.astype(np.float64)
    tensor = torch.from_numpy(arr)
    # NaN marks a missing value (pyrovae.data.missing); the run checks what it allows,
    # and the range its likelihood takes ([0, 1] for a Bernoulli; any value for a Gaussian).
    check_finite(tensor, where, missing=True)
    check_float32_range(arr, where)
    return tensor.to(torch.float32)


def _labels_from_array(y: np.ndarray, n: int, where: str) -> torch.Tensor:
    if y.ndim != 1 or y.shape[0] != n:
        raise DataError(
            f"{where}: labels of shape {y.shape} do not match {n} images; "
            f"expected a 1-D array of length {n}"
        )
    integral = y.dtype.kind in "biu" or (
        y.dtype.kind == "f" and bool(np.all(np.isfinite(y))) and bool(np.all(y == np.round(y)))
    )
    if not integral:
        raise DataError(f"{where}: labels of dtype {y.dtype} are not integer class ids")
    return torch.from_numpy(y.astype(np.int64))
