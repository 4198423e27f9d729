"""Image data sets, loaded whole into memory and validated before training.

The trainer batches by indexing one tensor on the device, so a data set here is
just two tensors, train and test, each ``(N, C, H, W)``: there is no
``Dataset``/``DataLoader`` layer. Everything is checked once, up front (files
present, shapes, dtypes, NaN/inf, the [0, 1] range that a Bernoulli or
continuous-Bernoulli likelihood needs), so a bad file fails in a second with a
one-line :class:`~pyrovae.errors.DataError` rather than an epoch later as a NaN
ELBO.

Named sets (:data:`DATASETS`)
-----------------------------
``digits``
    The 8x8 UCI handwritten digits bundled with scikit-learn (Alpaydin &
    Kaynak, 1998): no download, so it is the default and what tests use.
``mnist``
    LeCun, Bottou, Bengio & Haffner (1998), "Gradient-based learning applied
    to document recognition", Proc. IEEE 86(11).
``fashion-mnist``
    Xiao, Rasul & Vollgraf (2017), "Fashion-MNIST: a novel image dataset for
    benchmarking machine learning algorithms", arXiv:1708.07747.

Any other name is read as a path: a ``.npy``/``.npz`` array file or a folder of
PNG/JPEG images, split into train and test with a seeded permutation.

Pixels are kept as found, ``uint8`` 0..255 or ``float32`` in [0, 1], so MNIST
takes a quarter of the memory of floats; :func:`to_unit_float` converts one
batch at a time on the device.

Examples
--------
>>> data = load_dataset("digits")
>>> data.image_shape
(1, 8, 8)
>>> x = to_unit_float(data.train[:64])  # (64, 1, 8, 8) float32 in [0, 1]
"""

from __future__ import annotations

import dataclasses
import gzip
import math
import os
import shutil
import socket
import struct
import tempfile
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pyrovae.errors import ConfigError, DataError

__all__ = [
    "DATASETS",
    "ImageData",
    "check_finite_unit_interval",
    "is_binary",
    "load_dataset",
    "to_unit_float",
]

#: Data sets known by name; any other name given to :func:`load_dataset` is a path.
DATASETS: tuple[str, ...] = ("digits", "mnist", "fashion-mnist")

# The fixed digits split: 360 of 1797 images (20%) held out, stratified, so
# every run and every seed is scored on the same test images.
_DIGITS_TEST_SIZE = 360
_DIGITS_SPLIT_SEED = 0
_DIGITS_MAX_PIXEL = 16.0

# The four IDX files of MNIST and Fashion-MNIST, as LeCun's site and torchvision
# name them (each may also be gzipped).
_IDX_FILES: tuple[str, ...] = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_TORCHVISION_CLASS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
# Debian's dataset-fashion-mnist package installs the four .gz files here.
_SYSTEM_DIRS: dict[str, tuple[Path, ...]] = {
    "fashion-mnist": (Path("/usr/share/datasets/fashion-mnist"),),
}
# torchvision's downloader sets no socket timeout, so a firewalled machine
# could otherwise hang rather than fail.
_DOWNLOAD_TIMEOUT_S = 30.0

_IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
_NPZ_IMAGE_KEYS = ("x", "images", "arr_0")
_NPZ_LABEL_KEYS = ("y", "labels")

# Elementwise checks run over slices of dim 0 of about this many elements, so
# checking a large float set on the GPU never doubles its memory.
_CHUNK_ELEMENTS = 1 << 24


@dataclass(eq=False)
class ImageData:
    """A data set of images held whole in memory, already split.

    Parameters
    ----------
    name
        The name or path it was loaded from.
    train
        Training images, ``(N, C, H, W)``, ``uint8`` in 0..255 or ``float32``
        in [0, 1].
    test
        Held-out images, ``(M, C, H, W)``, same dtype and image shape as
        ``train``.
    train_labels, test_labels
        Class labels, ``(N,)`` and ``(M,)`` ``int64``, or ``None`` where the
        source has none.
    """

    name: str
    train: torch.Tensor
    test: torch.Tensor
    train_labels: torch.Tensor | None = None
    test_labels: torch.Tensor | None = None

    def __post_init__(self) -> None:
        # Cheap structural checks only: this also runs on every ``to()``.
        for split, x in (("train", self.train), ("test", self.test)):
            if x.dim() != 4:
                raise DataError(
                    f"{self.name}: {split} images have shape {tuple(x.shape)}; "
                    "expected (N, C, H, W)"
                )
        if self.train.shape[1:] != self.test.shape[1:] or self.train.dtype != self.test.dtype:
            raise DataError(
                f"{self.name}: train images are {tuple(self.train.shape[1:])} {self.train.dtype} "
                f"but test images are {tuple(self.test.shape[1:])} {self.test.dtype}; "
                "both splits must have one image shape and dtype"
            )
        for split, x, y in (
            ("train", self.train, self.train_labels),
            ("test", self.test, self.test_labels),
        ):
            if y is not None and tuple(y.shape) != (x.shape[0],):
                raise DataError(
                    f"{self.name}: {split} labels have shape {tuple(y.shape)} "
                    f"for {x.shape[0]} images; expected ({x.shape[0]},)"
                )

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """The shape of one image, ``(C, H, W)``."""
        c, h, w = self.train.shape[1:]
        return int(c), int(h), int(w)

    def to(self, device: torch.device | str) -> ImageData:
        """Return a copy with every tensor on ``device`` (dtypes unchanged)."""

        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device)

        return dataclasses.replace(
            self,
            train=self.train.to(device),
            test=self.test.to(device),
            train_labels=move(self.train_labels),
            test_labels=move(self.test_labels),
        )

    def __repr__(self) -> str:
        # The dataclass default would print the pixels.
        def describe(t: torch.Tensor) -> str:
            return f"{tuple(t.shape)} {str(t.dtype).removeprefix('torch.')} on {t.device}"

        labelled = self.train_labels is not None
        return (
            f"ImageData(name={self.name!r}, train={describe(self.train)}, "
            f"test={describe(self.test)}, labels={labelled})"
        )


# --------------------------------------------------------------------------- #
# Pixel helpers
# --------------------------------------------------------------------------- #


def _check_pixel_dtype(x: torch.Tensor) -> None:
    if x.dtype in (torch.uint8, torch.bool) or x.dtype.is_floating_point:
        return
    raise DataError(
        f"cannot read a tensor of dtype {x.dtype} as pixels: "
        "expected uint8 (0..255), bool, or float in [0, 1]"
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


def check_finite_unit_interval(x: torch.Tensor, what: str) -> None:
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

    Raises
    ------
    DataError
        If ``x`` is empty, holds NaN or inf, or has values outside [0, 1].
    """
    if x.numel() == 0:
        raise DataError(f"{what} is empty (shape {tuple(x.shape)}): expected at least one image")
    _check_pixel_dtype(x)
    if not x.dtype.is_floating_point:
        return
    n_nonfinite = n_outside = 0
    first_nonfinite = first_outside = -1
    for start, chunk in _row_chunks(x):
        nonfinite = ~torch.isfinite(chunk)
        outside = (chunk < 0) | (chunk > 1)  # False for NaN, so counted once
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
            f"{what} has {n_nonfinite} NaN/inf values (first at index {first_nonfinite}); "
            "remove or repair those images before training"
        )
    if n_outside:
        lo, hi = _finite_min_max(x)
        raise DataError(
            f"{what} has {n_outside} values outside [0, 1] (min {lo:.4g}, max {hi:.4g}, "
            f"first at index {first_outside}); float pixels must lie in [0, 1]: "
            "divide 0..255 data by 255 or store it as uint8"
        )


def _first_row(mask: torch.Tensor) -> int:
    if mask.dim() <= 1:
        return int(mask.reshape(-1).nonzero()[0, 0])
    return int(mask.flatten(1).any(dim=1).nonzero()[0, 0])


def _finite_min_max(x: torch.Tensor) -> tuple[float, float]:
    lo, hi = math.inf, -math.inf
    for _, chunk in _row_chunks(x):
        lo = min(lo, float(chunk.amin()))
        hi = max(hi, float(chunk.amax()))
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


# --------------------------------------------------------------------------- #
# Loading
# --------------------------------------------------------------------------- #


def load_dataset(
    name: str | os.PathLike[str],
    data_dir: str | os.PathLike[str] | None = None,
    *,
    seed: int = 0,
    test_fraction: float = 0.1,
    download: bool = True,
) -> ImageData:
    """Load a named data set or an image file/folder, validated and split.

    Parameters
    ----------
    name
        One of :data:`DATASETS` (case-insensitive, ``_`` read as ``-``), or a
        path to a ``.npy``/``.npz`` file or a folder of PNG/JPEG images. A
        relative path not found from the working directory is also looked for
        under ``data_dir``.
    data_dir
        Where to look for the MNIST / Fashion-MNIST IDX files (directly, or in
        ``<MNIST|FashionMNIST>/raw/`` as torchvision lays them out) and where
        to download them. Defaults to ``$XDG_CACHE_HOME/pyrovae/<name>``
        (``~/.cache/pyrovae/<name>``). Unused by ``digits``.
    seed
        Seed of the train/test permutation for data read from a path. The
        named sets have fixed splits and ignore it.
    test_fraction
        Share of a path's images held out for test, in [0, 1); at least one
        image is held out when there are two or more. Ignored by named sets
        and by an ``.npz`` that holds its own ``x_train``/``x_test``.
    download
        Whether MNIST / Fashion-MNIST may be downloaded (by torchvision) when
        no local copy is found.

    Returns
    -------
    ImageData
        ``digits`` is ``float32`` (1, 8, 8) with 1437/360 train/test images;
        MNIST and Fashion-MNIST are ``uint8`` (1, 28, 28), 60000/10000; paths
        keep ``uint8`` as ``uint8`` and give ``float32`` otherwise.

    Raises
    ------
    DataError
        If the data cannot be found or read, or is empty, malformed, non-finite
        or out of range. The message is one line and says how to fix it.
    ConfigError
        If ``test_fraction`` is not in [0, 1).
    """
    if not 0.0 <= test_fraction < 1.0:
        raise ConfigError(f"test_fraction must be in [0, 1), got {test_fraction}")
    if not -(2**63) <= seed < 2**64:  # what torch.Generator.manual_seed takes
        raise ConfigError(f"the seed must be a whole number from -2**63 to 2**64 - 1, got {seed}")
    text = os.fspath(name)
    key = text.strip().lower().replace("_", "-")
    if key == "digits":
        return _load_digits()
    if key in _TORCHVISION_CLASS:
        return _load_idx_set(key, data_dir, download)

    path = _resolve_path(text, data_dir)
    if path.is_dir():
        parts = [_read_image_folder(path)]
    elif path.suffix.lower() in (".npy", ".npz"):
        parts = _read_array_file(path)
    else:
        raise DataError(
            f"unsupported file type {path.suffix or '(no suffix)'!r} for {path}: "
            "expected a .npy or .npz array file or a folder of PNG/JPEG images"
        )
    if len(parts) == 2:
        # The file brought its own split.
        (train, train_labels), (test, test_labels) = parts
    else:
        ((images, labels),) = parts
        train, test, train_labels, test_labels = _split(images, labels, seed, test_fraction)
    return ImageData(text, train, test, train_labels, test_labels)


def _split(
    images: torch.Tensor, labels: torch.Tensor | None, seed: int, test_fraction: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    n = images.shape[0]
    n_test = 0 if n < 2 else min(n - 1, max(1, round(test_fraction * n)))
    generator = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=generator)
    # Sorted, so each split keeps the source's order (file order, class order).
    test_idx = perm[:n_test].sort().values
    train_idx = perm[n_test:].sort().values
    if labels is None:
        return images[train_idx], images[test_idx], None, None
    return images[train_idx], images[test_idx], labels[train_idx], labels[test_idx]


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _resolve_path(text: str, data_dir: str | os.PathLike[str] | None) -> Path:
    path = Path(text).expanduser()
    if path.exists():
        return path
    if data_dir is not None and not path.is_absolute():
        under = Path(data_dir).expanduser() / path
        if under.exists():
            return under
    where = f" or in {Path(data_dir).expanduser()}" if data_dir is not None else ""
    raise DataError(
        f"unknown data set {text!r}: expected one of {', '.join(DATASETS)}, "
        f"a .npy/.npz file or a folder of images (no file or folder {text!r} "
        f"in {Path.cwd()}{where})"
    )


# --- digits ----------------------------------------------------------------- #


def _load_digits() -> ImageData:
    # sklearn is imported here: it is slow to import and only digits needs it.
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = (bunch.images / _DIGITS_MAX_PIXEL).astype(np.float32)[:, None]  # (1797, 1, 8, 8)
    labels = bunch.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images,
        labels,
        test_size=_DIGITS_TEST_SIZE,
        random_state=_DIGITS_SPLIT_SEED,
        stratify=labels,
    )
    return ImageData(
        "digits",
        torch.from_numpy(np.ascontiguousarray(x_train)),
        torch.from_numpy(np.ascontiguousarray(x_test)),
        torch.from_numpy(y_train),
        torch.from_numpy(y_test),
    )


# --- MNIST / Fashion-MNIST ---------------------------------------------------- #


def _cache_dir(key: str) -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "pyrovae" / key


def _find_idx_file(folder: Path, stem: str) -> Path | None:
    # Unzipped copies from some mirrors (e.g. Kaggle) name them
    # "train-images.idx3-ubyte"; raw files are preferred over .gz (no unpacking).
    for name in (stem, stem.replace("-idx", ".idx")):
        for suffix in ("", ".gz"):
            candidate = folder / f"{name}{suffix}"
            if candidate.is_file():
                return candidate
    return None


def _find_idx_files(folder: Path) -> tuple[dict[str, Path] | None, str]:
    """The four IDX files in ``folder``, or ``None`` and what was wrong."""
    if not folder.is_dir():
        return None, "no such folder"
    found = {stem: _find_idx_file(folder, stem) for stem in _IDX_FILES}
    missing = [stem for stem, path in found.items() if path is None]
    if not missing:
        return {stem: path for stem, path in found.items() if path is not None}, ""
    if len(missing) == len(_IDX_FILES):
        return None, "none of the four files"
    return None, "missing " + ", ".join(missing)


def _load_idx_set(key: str, data_dir: str | os.PathLike[str] | None, download: bool) -> ImageData:
    class_name = _TORCHVISION_CLASS[key]
    candidates: list[Path] = []
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        candidates += [root, root / class_name / "raw"]
    candidates += _SYSTEM_DIRS.get(key, ())
    if data_dir is None:
        root = _cache_dir(key)
        candidates += [root, root / class_name / "raw"]

    looked = []
    for folder in candidates:
        files, problem = _find_idx_files(folder)
        if files is not None:
            return _read_idx_set(key, files)
        looked.append(f"{folder} ({problem})")

    if not download:
        outcome = "download disabled"
    else:
        try:
            _download_idx_set(key, root)
        except Exception as exc:  # any failure (offline, proxy, disk) ends in the DataError
            outcome = f"download into {root} failed ({_one_line(exc)})"
        else:
            files, problem = _find_idx_files(root / class_name / "raw")
            if files is not None:
                return _read_idx_set(key, files)
            outcome = f"download into {root} left no usable files ({problem})"

    apt = ", `apt-get install dataset-fashion-mnist`" if key == "fashion-mnist" else ""
    raise DataError(
        f"{key} not found: looked for {', '.join(_IDX_FILES)} (raw or .gz) in "
        f"{'; '.join(looked)}; {outcome}. Fix: pass --data-dir DIR holding those four "
        f"files{apt}, or run once with network access and download enabled"
    )


def _download_idx_set(key: str, root: Path) -> None:
    from torchvision import datasets

    dataset_class = getattr(datasets, _TORCHVISION_CLASS[key])
    root.mkdir(parents=True, exist_ok=True)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(_DOWNLOAD_TIMEOUT_S)
    try:
        # Downloads all four files into root/<Class>/raw; we then read them
        # with the same code path as a local copy.
        dataset_class(root=str(root), train=True, download=True)
    finally:
        socket.setdefaulttimeout(previous)


def _read_idx_set(key: str, files: dict[str, Path]) -> ImageData:
    # torchvision's readers take a path to an uncompressed file, and the
    # originals may sit in a read-only system folder: unpack into a temp dir.
    with tempfile.TemporaryDirectory(prefix="pyrovae-idx-") as tmp:
        arrays = {
            stem: _read_idx_file(path, Path(tmp), images="images" in stem)
            for stem, path in files.items()
        }
    splits = []
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images_path = files[f"{prefix}-images-idx3-ubyte"]
        labels_path = files[f"{prefix}-labels-idx1-ubyte"]
        images = arrays[f"{prefix}-images-idx3-ubyte"]
        labels = arrays[f"{prefix}-labels-idx1-ubyte"]
        if images.shape[0] == 0:
            raise DataError(
                f"{images_path} holds 0 images: the {key} {split} set is empty; "
                "fetch the file again"
            )
        if labels.shape[0] != images.shape[0]:
            raise DataError(
                f"{images_path} holds {images.shape[0]} images but {labels_path} holds "
                f"{labels.shape[0]} labels; the files come from different sets or are "
                "truncated, fetch them again"
            )
        splits.append((images.unsqueeze(1).contiguous(), labels))  # (N, 1, H, W) uint8
    (train, train_labels), (test, test_labels) = splits
    if train.shape[1:] != test.shape[1:]:
        raise DataError(
            f"{key}: train images are {tuple(train.shape[2:])} but test images are "
            f"{tuple(test.shape[2:])} pixels; the files come from different sets"
        )
    return ImageData(key, train, test, train_labels, test_labels)


def _read_idx_file(path: Path, tmp: Path, *, images: bool) -> torch.Tensor:
    from torchvision.datasets.mnist import read_image_file, read_label_file

    reader = read_image_file if images else read_label_file
    try:
        if path.suffix == ".gz":
            raw = tmp / path.stem
            with gzip.open(path, "rb") as src, open(raw, "wb") as dst:
                shutil.copyfileobj(src, dst)
        else:
            raw = path
        # torchvision's parser signals bad headers with assert and KeyError.
        return reader(str(raw))
    except (
        OSError,
        EOFError,
        zlib.error,
        AssertionError,
        KeyError,
        IndexError,
        TypeError,
        ValueError,
        RuntimeError,
    ) as exc:
        kind = "image" if images else "label"
        raise DataError(
            f"could not read {path} as an IDX {kind} file ({_one_line(exc)}); "
            "it is truncated or not an IDX file: delete it and fetch it again"
        ) from exc


# --- .npy / .npz --------------------------------------------------------------- #


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


def _read_array_file(path: Path) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """One ``(images, labels)`` part, or two if the file holds its own split."""
    try:
        loaded = np.load(path, allow_pickle=False)
    except _ARRAY_FILE_ERRORS as exc:
        raise DataError(
            f"could not read {path} ({_one_line(exc)}); expected a numpy .npy/.npz "
            "file of numeric arrays (no pickled objects)"
        ) from exc
    if isinstance(loaded, np.ndarray):
        return [(_images_from_array(loaded, str(path)), None)]

    with loaded:
        try:
            keys = list(loaded.files)
            arrays = {k: loaded[k] for k in keys}
        except _ARRAY_FILE_ERRORS as exc:
            raise DataError(f"could not read {path} ({_one_line(exc)})") from exc
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


def _images_from_array(arr: np.ndarray, where: str) -> torch.Tensor:
    """Validate an image array and return it as ``(N, C, H, W)`` uint8 or float32."""
    if arr.ndim == 3:
        arr = arr[:, None]
    elif arr.ndim == 4:
        if arr.shape[1] not in (1, 3):
            if arr.shape[3] in (1, 3):
                arr = arr.transpose(0, 3, 1, 2)  # N x H x W x C, as PIL/matplotlib store it
            else:
                raise DataError(
                    f"{where}: images of shape {arr.shape} have {arr.shape[1]} channels; "
                    "expected 1 (grayscale) or 3 (RGB), as N x C x H x W or N x H x W x C"
                )
    else:
        hint = " (reshape flat N x D rows to N x H x W)" if arr.ndim == 2 else ""
        raise DataError(
            f"{where}: array of shape {arr.shape} is {arr.ndim}-D; expected images as "
            f"N x H x W or N x C x H x W{hint}"
        )
    if arr.shape[0] == 0:
        raise DataError(f"{where} holds 0 images (shape {arr.shape}): the data set is empty")
    if 0 in arr.shape[2:]:
        raise DataError(f"{where}: images of shape {arr.shape} have no pixels")

    kind = arr.dtype.kind
    if kind not in "biuf":
        raise DataError(
            f"{where}: unsupported dtype {arr.dtype}; expected uint8, integers in 0..255, "
            "bool, or floats in [0, 1]"
        )
    # torch.from_numpy rejects non-native byte order (e.g. '>f4' written elsewhere).
    arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("="))
    if kind == "b":
        return torch.from_numpy(arr.astype(np.float32))
    if kind in "iu":
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > 255:
            raise DataError(
                f"{where}: integer pixels run from {lo} to {hi}; expected 0..255 "
                "(or floats in [0, 1])"
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
    # range rather than as the inf it would become in float32.
    tensor = torch.from_numpy(arr)
    check_finite_unit_interval(tensor, where)
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


# --- folder of images ------------------------------------------------------------ #


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES and not p.name.startswith(".")
    )


def _read_image_folder(folder: Path) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Read a folder of same-size images; subfolders, if used, are the classes."""
    top = _image_files(folder)
    subfolders = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    classes = [(d.name, files) for d in subfolders if (files := _image_files(d))]
    if top and classes:
        raise DataError(
            f"{folder} has images both at its top level ({top[0].name}) and in subfolders "
            f"({classes[0][0]}/): put all images directly in the folder, or all in one "
            "subfolder per class"
        )
    if top:
        files, labels = top, None
    elif classes:
        files = [f for _, class_files in classes for f in class_files]
        labels = torch.tensor(
            [i for i, (_, class_files) in enumerate(classes) for _ in class_files],
            dtype=torch.int64,
        )
    else:
        raise DataError(
            f"{folder} holds no PNG or JPEG images (looked at its top level and its "
            "immediate subfolders): the data set is empty"
        )

    first = _read_image(files[0])  # (H, W, C) uint8
    images = np.empty((len(files), first.shape[2], *first.shape[:2]), dtype=np.uint8)
    for i, path in enumerate(files):
        pixels = first if i == 0 else _read_image(path)
        if pixels.shape != first.shape:
            a, b = files[0].relative_to(folder), path.relative_to(folder)
            if pixels.shape[2] != first.shape[2]:
                mode = {1: "grayscale", 3: "RGB"}
                raise DataError(
                    f"images in {folder} mix grayscale and RGB: {a} is {mode[first.shape[2]]} "
                    f"but {b} is {mode[pixels.shape[2]]}; convert them all to one mode"
                )
            raise DataError(
                f"images in {folder} differ in size: {a} is {first.shape[1]}x{first.shape[0]} "
                f"but {b} is {pixels.shape[1]}x{pixels.shape[0]} (width x height); "
                "resize them all to one size"
            )
        images[i] = pixels.transpose(2, 0, 1)
    return torch.from_numpy(images), labels


def _read_image(path: Path) -> np.ndarray:
    """One image file as ``(H, W, C)`` uint8, C = 1 (grayscale) or 3 (RGB).

    An image above PIL's pixel limit (``Image.MAX_IMAGE_PIXELS``, where PIL
    warns of a decompression bomb, or twice that, where it refuses) is a
    :class:`DataError`, as is any file PIL cannot decode.
    """
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                return _pixels(image, path)
    except DataError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(
            f"image {path} is too large to read safely ({_one_line(exc)}); "
            "resize it or take it out of the folder"
        ) from exc
    except Exception as exc:  # PIL's decoders raise many types on a corrupt file
        raise DataError(f"could not read image {path} ({_one_line(exc)})") from exc


def _pixels(image: Any, path: Path) -> np.ndarray:
    mode = image.mode
    if mode in ("1", "L", "LA"):
        # Binary images become 0/255; alpha is dropped (a VAE models pixels only).
        return np.asarray(image.convert("L"), dtype=np.uint8)[:, :, None]
    if mode in ("P", "PA"):
        # Via RGBA so that palette transparency is resolved, not warned about.
        return np.asarray(image.convert("RGBA").convert("RGB"), dtype=np.uint8)
    if mode not in ("RGB", "RGBA", "CMYK", "YCbCr"):
        raise DataError(
            f"{path}: pixel mode {mode} (e.g. 16-bit or float) is not supported; "
            "save the images as 8-bit grayscale or RGB"
        )
    return np.asarray(image.convert("RGB"), dtype=np.uint8)
