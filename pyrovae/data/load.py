"""Load a data set by name or path: the one entry point of the data layer.

Named sets (:data:`DATASETS`) have fixed splits; any other name is read as a
path (an array file or an image folder) and split with a seeded permutation.
Everything is checked once, up front, so a bad file fails in a second with a
one-line :class:`~pyrovae.errors.DataError` rather than an epoch later as a
NaN ELBO.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

from pyrovae.data.arrays import _ARRAY_FILE_ERRORS, check_image_layout, read_array_file
from pyrovae.data.dataset import ArrayData, random_split, split_indices
from pyrovae.data.digits import load_digits
from pyrovae.data.folders import check_headers, list_image_folder, read_image_folder
from pyrovae.data.idx import TORCHVISION_CLASS, load_idx_set
from pyrovae.data.streams import FolderRows, NpyRows, choose
from pyrovae.errors import ConfigError, DataError, describe_exception

#: Data sets known by name; any other name given to :func:`load_dataset` is a path.
DATASETS: tuple[str, ...] = ("digits", "mnist", "fashion-mnist")


def load_dataset(
    name: str | os.PathLike[str],
    data_dir: str | os.PathLike[str] | None = None,
    *,
    seed: int = 0,
    test_fraction: float = 0.1,
    download: bool = True,
    stream: str = "no",
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

    Returns
    -------
    ArrayData
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
        return load_digits()
    if key in TORCHVISION_CLASS:
        return load_idx_set(key, data_dir, download)

    path = _resolve_path(text, data_dir)
    streamable = path.is_dir() or path.suffix.lower() == ".npy"
    if stream == "yes" and not streamable:
        raise DataError(
            f"--stream yes reads .npy files and image folders, not {path.name}: "
            "save the array as .npy, or use --stream no"
        )
    if stream != "no" and streamable:
        streamed = _streamed(path, text, stream, seed, test_fraction)
        if streamed is not None:
            return streamed
    if path.is_dir():
        parts = [read_image_folder(path)]
    elif path.suffix.lower() in (".npy", ".npz"):
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
        train, test, train_labels, test_labels = random_split(images, labels, seed, test_fraction)
    return ArrayData(text, train, test, train_labels, test_labels)


def _streamed(
    path: Path, name: str, stream: str, seed: int, test_fraction: float
) -> ArrayData | None:
    """The set at ``path`` with its training split streamed, or ``None`` where ``auto``
    keeps it in memory. The split is the one :func:`random_split` makes of the same file."""
    files: list[Path] = []
    labels = None
    if path.is_dir():
        files, labels = list_image_folder(path)
        check_headers(files, path)  # one size and mode, from headers: no pixels decoded
        first = FolderRows(path, files, torch.arange(1))
        nbytes, n = len(files) * math.prod(first.shape[1:]), len(files)
    else:
        try:
            header = np.load(path, mmap_mode="r", allow_pickle=False)
        except _ARRAY_FILE_ERRORS as exc:
            raise DataError(f"could not read {path} ({describe_exception(exc)})") from exc
        check_image_layout(header.shape, str(path))
        nbytes, n = int(header.nbytes), int(header.shape[0])
        del header
    streaming, reading = choose(stream, nbytes)
    if not streaming:
        return None
    train_idx, test_idx = split_indices(n, seed, test_fraction)

    def rows(idx: torch.Tensor) -> NpyRows | FolderRows:
        return FolderRows(path, files, idx) if files else NpyRows(path, idx)

    test = rows(test_idx)
    test_images = test[:] if len(test) else torch.zeros(0, *test.shape[1:], dtype=test.dtype)
    return ArrayData(
        name,
        rows(train_idx),
        test_images,
        None if labels is None else labels[train_idx],
        None if labels is None else labels[test_idx],
        reading=reading,
    )


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
