"""CIFAR-10 (Krizhevsky 2009, "Learning multiple layers of features from tiny
images"), read and downloaded by ``torchvision.datasets.CIFAR10``.

50,000 training and 10,000 test colour images of 32x32 in ten classes, in the
python version of the set: the folder ``cifar-10-batches-py`` with the pickles
``data_batch_1`` .. ``data_batch_5``, ``test_batch`` and ``batches.meta``. It
is looked for in ``--data-dir`` and in a cache folder, and downloaded there
by torchvision (which checks the archive's MD5) when neither holds it.

The pickles are read by an unpickler that builds numpy arrays and plain
Python values only: a pickle runs whatever callable it names when it is
loaded, so a file put in ``--data-dir`` by someone else (torchvision's own
reader would run it) is refused, not executed.
"""

from __future__ import annotations

import os
import pickle
import socket
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pyrovae.data.dataset import ArrayData
from pyrovae.data.idx import _DOWNLOAD_TIMEOUT_S, _cache_dir
from pyrovae.errors import DataError, describe_exception
from pyrovae.files import new_folders_removed_on_failure

FOLDER = "cifar-10-batches-py"
FILES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta")
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"


def load_cifar10(data_dir: str | os.PathLike[str] | None, download: bool) -> ArrayData:
    """CIFAR-10 as ``uint8`` ``(N, 3, 32, 32)`` with its labels and class names.

    Looked for in ``data_dir`` (holding ``cifar-10-batches-py/``, or that
    folder itself), else in ``$XDG_CACHE_HOME/pyrovae/cifar10``; downloaded
    into the first when ``download`` and none holds the files.

    Raises
    ------
    DataError
        One line that says where to put the files, when they are not found and
        cannot be downloaded, or cannot be read.
    """
    root = Path(data_dir).expanduser() if data_dir is not None else _cache_dir("cifar10")
    candidates = [root, root.parent] if root.name == FOLDER else [root]
    looked = []
    for folder in candidates:
        try:
            missing = [name for name in FILES if not (folder / FOLDER / name).is_file()]
        except OSError as exc:  # a name too long, a folder we may not read
            looked.append(f"{folder / FOLDER} ({describe_exception(exc)})")
            continue
        if not missing:
            return _read(folder)
        what = "no files" if len(missing) == len(FILES) else "missing " + ", ".join(missing)
        looked.append(f"{folder / FOLDER} ({what})")
    if not download:
        outcome = "download disabled"
    else:
        try:
            _download(root)
        except Exception as exc:  # any failure (offline, proxy, disk) ends in the DataError
            outcome = f"download into {root} failed ({describe_exception(exc)})"
        else:
            return _read(root)
    raise DataError(
        f"cifar10 not found: looked for {FOLDER}/ with {', '.join(FILES)} in "
        f"{'; '.join(looked)}; {outcome}. Fix: download {URL}, unpack it into a folder DIR "
        f"(it makes DIR/{FOLDER}/) and pass --data-dir DIR, or run once with network access"
    )


def _numpy_constructors() -> dict[tuple[str, str], Any]:
    """What a pickled ndarray names, under the module paths numpy 1.x (the genuine
    files, written by Python 2) and numpy 2.x give them, mapped to this numpy's."""
    import codecs
    import importlib

    try:
        multiarray = importlib.import_module("numpy._core.multiarray")
        numeric = importlib.import_module("numpy._core.numeric")
    except ImportError:  # numpy < 2 without the numpy._core alias
        multiarray = importlib.import_module("numpy.core.multiarray")
        numeric = importlib.import_module("numpy.core.numeric")
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        # Python 3 writing bytes under protocol 2 goes through _codecs.encode, and
        # empty bytes (the buffer of an empty array) through bytes().
        ("_codecs", "encode"): codecs.encode,
        ("__builtin__", "bytes"): _empty_bytes,
        ("builtins", "bytes"): _empty_bytes,
    }
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


def _empty_bytes(*args: object) -> bytes:
    """``bytes()`` as a pickle calls it for b"": with no argument, so that a pickle
    cannot ask for ``bytes(N)``, N zero bytes of memory for a few bytes of file."""
    if args:
        raise pickle.UnpicklingError(
            "it calls bytes() with arguments, which no array's buffer needs: refused"
        )
    return b""


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Builds numpy arrays and plain values; any other callable a pickle names
    (``os.system``, a module to import) raises ``UnpicklingError`` before it runs."""

    allowed = _numpy_constructors()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"it names {module}.{name}, which is not a numpy array: refused, as loading it "
                "would run that code"
            ) from None


def _load_pickle(path: Path) -> Any:
    """One CIFAR pickle, its Python 2 strings read as latin-1 (as torchvision does)."""
    with open(path, "rb") as handle:
        return _ArraysOnlyUnpickler(handle, encoding="latin1").load()


def _download(root: Path) -> None:
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import download_and_extract_archive

    previous = socket.getdefaulttimeout()
    # torchvision's downloader sets no timeout: a firewalled machine would hang.
    socket.setdefaulttimeout(_DOWNLOAD_TIMEOUT_S)
    try:
        with new_folders_removed_on_failure(root):
            root.mkdir(parents=True, exist_ok=True)
            download_and_extract_archive(
                CIFAR10.url, str(root), filename=CIFAR10.filename, md5=CIFAR10.tgz_md5
            )
    finally:
        socket.setdefaulttimeout(previous)


def _read_split(folder: Path, names: tuple[str, ...]) -> tuple[np.ndarray, list[int]]:
    """The batches' rows as ``(N, 3, 32, 32)`` (each row is 1024 red, 1024 green,
    1024 blue bytes, row-major) and their labels."""
    rows: list[np.ndarray] = []
    labels: list[int] = []
    for name in names:
        entry = _load_pickle(folder / name)
        data, batch_labels = entry["data"], list(entry["labels"])
        if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
                and data.shape[1] == 3 * 32 * 32 and len(batch_labels) == len(data)):  # fmt: skip
            raise ValueError(f"{name} holds no uint8 array of rows of 3072 bytes with a label each")
        if len(data) == 0:
            raise ValueError(f"{name} holds 0 images")
        if not all(isinstance(label, (int, np.integer)) for label in batch_labels):
            raise ValueError(f"{name} has labels that are not whole numbers")
        rows.append(data)
        labels.extend(batch_labels)
    return np.concatenate(rows).reshape(-1, 3, 32, 32), labels


def _read(root: Path) -> ArrayData:
    folder = root / FOLDER
    splits = []
    try:
        classes = tuple(str(c) for c in _load_pickle(folder / "batches.meta")["label_names"])
        for names in (FILES[:5], FILES[5:6]):
            images, labels = _read_split(folder, names)
            splits.append((torch.from_numpy(images), torch.as_tensor(labels, dtype=torch.int64)))
    except pickle.UnpicklingError as exc:
        raise DataError(
            f"could not read CIFAR-10 from {folder} ({describe_exception(exc)}); delete the "
            f"files and fetch {URL} again"
        ) from exc
    except MemoryError as exc:  # the machine's, or a damaged file's claim to gigabytes
        raise DataError(
            f"ran out of memory reading CIFAR-10 from {folder} (it needs about 400 MB); "
            f"free some memory, or if the files are damaged, delete them and fetch {URL} again"
        ) from exc
    except Exception as exc:  # whatever a doctored or damaged pickle builds or breaks
        raise DataError(
            f"could not read CIFAR-10 from {folder} ({describe_exception(exc)}); "
            f"the files are truncated or not the python version: delete them and fetch {URL} "
            "again"
        ) from exc
    (train_x, train_y), (test_x, test_y) = splits
    for split, x, y in (("train", train_x, train_y), ("test", test_x, test_y)):
        if len(x) == 0 or len(y) != len(x) or not bool(((y >= 0) & (y < len(classes))).all()):
            raise DataError(
                f"CIFAR-10 in {root / FOLDER}: the {split} batches hold {len(x)} images and "
                f"{len(y)} labels for {len(classes)} classes; fetch {URL} again"
            )
    return ArrayData("cifar10", train_x, test_x, train_y, test_y, classes=classes)
