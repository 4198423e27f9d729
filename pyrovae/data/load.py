"""Load a data set by name or path: the one entry point of the data layer.

Named sets (:data:`DATASETS`) have fixed splits; any other name is read as a
path (an array file or an image folder) and split with a seeded permutation.
Everything is checked once, up front, so a bad file fails in a second with a
one-line :class:`~pyrovae.errors.DataError` rather than an epoch later as a
NaN ELBO.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import numpy as np
import torch

from pyrovae.data.arrays import (
    _ARRAY_FILE_ERRORS,
    array_file_reason,
    check_image_layout,
    read_array_file,
)
from pyrovae.data.cifar import load_cifar10
from pyrovae.data.dataset import (
    MEMORY,
    ArrayData,
    is_image_shape,
    random_split,
    split_indices,
)
from pyrovae.data.digits import load_digits
from pyrovae.data.folders import (
    FolderListing,
    ImageReader,
    check_headers,
    list_image_folder,
    read_image_folder,
)
from pyrovae.data.idx import load_idx_set
from pyrovae.data.pixels import convert_images
from pyrovae.data.streams import FolderRows, NpyRows, choose
from pyrovae.errors import ConfigError, DataError, describe_exception

#: Data sets known by name; any other name given to :func:`load_dataset` is a path.
DATASETS: tuple[str, ...] = ("digits", "mnist", "fashion-mnist", "cifar10")
_ALIASES = {"cifar-10": "cifar10"}


def load_dataset(
    name: str | os.PathLike[str],
    data_dir: str | os.PathLike[str] | None = None,
    *,
    seed: int = 0,
    test_fraction: float = 0.1,
    download: bool = True,
    stream: str = "no",
    image_size: int | None = None,
    channels: int | None = None,
) -> ArrayData:
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
    stream
        ``yes``: read the training images of a ``.npy`` file or an image
        folder a batch at a time rather than whole (:mod:`pyrovae.data.streams`;
        the test images are read whole); ``auto``: when they would take more than
        :data:`~pyrovae.data.streams.AUTO_FRACTION` of the memory available;
        ``no``: always whole (the default).
    image_size
        Resize every image so that its shorter side is this many pixels and
        crop its centre to a square (torchvision's ``Resize`` and
        ``CenterCrop``); ``None`` keeps the images as they are, and the
        images of a folder must then be of one size.
    channels
        Convert every image to 1 (grayscale) or 3 (RGB) channels; ``None``
        keeps them, and the images of a folder must then be of one mode.

    Returns
    -------
    ArrayData
        ``digits`` is ``float32`` (1, 8, 8) with 1437/360 train/test images;
        MNIST and Fashion-MNIST are ``uint8`` (1, 28, 28), 60000/10000;
        CIFAR-10 is ``uint8`` (3, 32, 32), 50000/10000, with its class names;
        paths keep ``uint8`` as ``uint8`` and give ``float32`` otherwise.

    Raises
    ------
    DataError
        If the data cannot be found or read, or is empty, malformed, non-finite
        or out of range. The message is one line and says how to fix it.
    ConfigError
        If ``test_fraction`` is not in [0, 1), ``channels`` not 1 or 3, or
        ``image_size`` not positive.
    """
    if not 0.0 <= test_fraction < 1.0:
        raise ConfigError(f"test_fraction must be in [0, 1), got {test_fraction}")
    if not -(2**63) <= seed < 2**64:  # what torch.Generator.manual_seed takes
        raise ConfigError(f"the seed must be a whole number from -2**63 to 2**64 - 1, got {seed}")
    if channels is not None and channels not in (1, 3):
        raise ConfigError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")
    if image_size is not None and (isinstance(image_size, bool) or image_size < 1):
        raise ConfigError(f"image_size must be a positive number of pixels, got {image_size!r}")
    text = os.fspath(name)
    key = dataset_key(text)
    if key in DATASETS:
        return _converted(_named(key, data_dir, download), image_size, channels)
    path = _resolve_path(text, data_dir)
    if path.is_dir():
        return _image_folder(
            path, text, stream, seed, test_fraction, ImageReader(image_size, channels)
        )
    return _converted(_array_file(path, text, stream, seed, test_fraction), image_size, channels)


def _named(key: str, data_dir: str | os.PathLike[str] | None, download: bool) -> ArrayData:
    if key == "digits":
        return load_digits()
    if key == "cifar10":
        return load_cifar10(data_dir, download)
    return load_idx_set(key, data_dir, download)


def _converted(data: ArrayData, image_size: int | None, channels: int | None) -> ArrayData:
    """``data`` with its images resized and converted as asked (:func:`convert_images`)."""
    if image_size is None and channels is None:
        return data
    if not is_image_shape(data.data_shape):
        raise DataError(
            f"{data.name}: data points of shape {data.data_shape} are not images (C, H, W) with "
            "1 or 3 channels; --image-size and --channels apply to images only"
        )
    if data.streamed:
        raise DataError(
            f"--image-size and --channels resize and convert images read whole or from a "
            f"folder, not a streamed .npy file ({data.name}): use --stream no, or save the "
            "images resized"
        )
    assert isinstance(data.train, torch.Tensor)
    return dataclasses.replace(
        data,
        train=convert_images(data.train, image_size, channels),
        test=convert_images(data.test, image_size, channels),
    )


def _image_folder(
    path: Path, name: str, stream: str, seed: int, test_fraction: float, reader: ImageReader
) -> ArrayData:
    """A folder of images, read whole or streamed, split with a seeded permutation."""
    listing = list_image_folder(path)
    if stream != "no":
        streamed = _streamed_folder(path, name, stream, seed, test_fraction, listing, reader)
        if streamed is not None:
            return streamed
    images = read_image_folder(path, listing, reader)
    return random_split(name, images, listing.labels, seed, test_fraction, classes=listing.classes)


def _array_file(path: Path, text: str, stream: str, seed: int, test_fraction: float) -> ArrayData:
    """A ``.npy`` or ``.npz`` file, read whole or (``.npy``) streamed."""
    streamable = path.suffix.lower() == ".npy"
    if stream == "yes" and not streamable:
        raise DataError(
            f"--stream yes reads .npy files and image folders, not {path.name}: "
            "save the array as .npy, or use --stream no"
        )
    if stream != "no" and streamable:
        streamed = _streamed_npy(path, text, stream, seed, test_fraction)
        if streamed is not None:
            return streamed
    if path.suffix.lower() in (".npy", ".npz"):
        parts = read_array_file(path)
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
        return random_split(text, images, labels, seed, test_fraction)
    return ArrayData(text, train, test, train_labels, test_labels)


def _streamed_npy(
    path: Path, name: str, stream: str, seed: int, test_fraction: float
) -> ArrayData | None:
    """The ``.npy`` file with its training split streamed, or ``None`` where ``auto``
    keeps it in memory. The split is the one :func:`random_split` makes of the same file."""
    try:
        header = np.load(path, mmap_mode="r", allow_pickle=False)
    except _ARRAY_FILE_ERRORS as exc:
        raise DataError(f"could not read {path} ({array_file_reason(exc)})") from exc
    if not isinstance(header, np.ndarray):  # an .npz archive under a .npy name
        if stream == "yes":
            raise DataError(
                f"{path} is an .npz archive, not a .npy array, and cannot be streamed: name "
                "it .npz, or train with --stream no"
            )
        return None  # read whole, as an .npz
    check_image_layout(header.shape, str(path))
    nbytes, n = int(header.nbytes), int(header.shape[0])
    del header
    streaming, reading = choose(stream, nbytes)
    if not streaming:
        return None
    train_idx, test_idx = split_indices(n, seed, test_fraction)
    train, test = NpyRows(path, train_idx), NpyRows(path, test_idx)
    # Before the test rows are read as pixels (the training rows are checked a slice at a
    # time when the run starts): a dtype of numbers, integers that fit in uint8.
    test.check_stored(f"{path} (its test rows)")
    data = _with_test_read(name, train, test, None, reading)
    return dataclasses.replace(data, train_rows=train_idx, test_rows=test_idx)


def _streamed_folder(
    path: Path,
    name: str,
    stream: str,
    seed: int,
    test_fraction: float,
    listing: FolderListing,
    reader: ImageReader,
) -> ArrayData | None:
    """The folder with its training split streamed through ``reader``, or ``None`` where
    ``auto`` keeps it in memory; split as :func:`random_split` splits it read whole."""
    files = listing.files
    check_headers(files, path, reader)  # one size and mode, from headers: no pixels decoded
    first = FolderRows(path, files, torch.arange(1), reader)
    streaming, reading = choose(stream, len(files) * math.prod(first.shape[1:]))
    if not streaming:
        return None
    train_idx, test_idx = split_indices(len(files), seed, test_fraction)
    train = FolderRows(path, files, train_idx, reader)
    test = FolderRows(path, files, test_idx, reader) if len(test_idx) else None
    labels = listing.labels
    split_labels = None if labels is None else (labels[train_idx], labels[test_idx])
    data = _with_test_read(name, train, test, split_labels, reading)
    return dataclasses.replace(data, classes=listing.classes)


def _with_test_read(
    name: str,
    train: NpyRows | FolderRows,
    test: NpyRows | FolderRows | None,
    labels: tuple[torch.Tensor, torch.Tensor] | None,
    reading: str,
) -> ArrayData:
    """Streamed training rows; the test rows read whole (they are scored every epoch)."""
    if test is not None and len(test):
        test_images = test[:]
    else:
        test_images = torch.zeros(0, *train.shape[1:], dtype=train.dtype)
    train_labels, test_labels = (None, None) if labels is None else labels
    return ArrayData(name, train, test_images, train_labels, test_labels, reading=reading)


def dataset_key(name: str) -> str:
    """A data set's name as :data:`DATASETS` spells it (case, ``_`` for ``-``, aliases);
    a path comes back lower-cased, matching none of them."""
    key = name.strip().lower().replace("_", "-")
    return _ALIASES.get(key, key)


def absolute_locations(
    dataset: str | os.PathLike[str], data_dir: str | None
) -> tuple[str, str | None]:
    """``dataset`` and ``data_dir`` as a run records them: a path to a file or folder
    of data, and ``data_dir``, made absolute, so that the run's data are found again
    from any working directory (``pyrovae evaluate`` run elsewhere, ``--resume``).
    Named sets, data from Python and paths not found are returned as given (loading
    says what is wrong with the last)."""
    dataset = os.fspath(dataset)
    if data_dir is not None:
        data_dir = str(Path(data_dir).expanduser().absolute())
    if dataset_key(dataset) in DATASETS or dataset == MEMORY:
        return dataset, data_dir
    try:
        return str(_resolve_path(dataset, data_dir).absolute()), data_dir
    except DataError:
        return dataset, data_dir


def _resolve_path(text: str, data_dir: str | os.PathLike[str] | None) -> Path:
    path = Path(text).expanduser()
    try:
        if path.exists():
            return path
        if data_dir is not None and not path.is_absolute():
            under = Path(data_dir).expanduser() / path
            if under.exists():
                return under
    except OSError as exc:  # a name too long, a folder we may not read
        raise DataError(f"cannot look for the data {text!r}: {describe_exception(exc)}") from None
    where = f" or in {Path(data_dir).expanduser()}" if data_dir is not None else ""
    raise DataError(
        f"unknown data set {text!r}: expected one of {', '.join(DATASETS)}, "
        f"a .npy/.npz file or a folder of images (no file or folder {text!r} "
        f"in {Path.cwd()}{where})"
    )
