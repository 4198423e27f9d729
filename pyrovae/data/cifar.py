"""CIFAR-10 (Krizhevsky 2009, "Learning multiple layers of features from tiny
images"), read and downloaded by ``torchvision.datasets.CIFAR10``.

50,000 training and 10,000 test colour images of 32x32 in ten classes, in the
python version of the set: the folder ``cifar-10-batches-py`` with the pickles
``data_batch_1`` .. ``data_batch_5``, ``test_batch`` and ``batches.meta``. It
is looked for in ``--data-dir`` and in a cache folder, and downloaded there
by torchvision (which checks the archive's MD5) when neither holds it.
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
        missing = [name for name in FILES if not (folder / FOLDER / name).is_file()]
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


def _torchvision_cifar10() -> Any:
    """torchvision's reader, checking that the files exist rather than their MD5 sums:
    a copy written by another tool (or a test) is read and its content checked here."""
    from torchvision.datasets import CIFAR10

    class LocalCIFAR10(CIFAR10):
        def _check_integrity(self) -> bool:
            return all((Path(self.root) / FOLDER / name).is_file() for name in FILES)

        def _load_meta(self) -> None:
            with open(Path(self.root) / FOLDER / self.meta["filename"], "rb") as handle:
                self.classes = pickle.load(handle, encoding="latin1")[self.meta["key"]]
            self.class_to_idx = {name: i for i, name in enumerate(self.classes)}

    return LocalCIFAR10


def _download(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    previous = socket.getdefaulttimeout()
    # torchvision's downloader sets no timeout: a firewalled machine would hang.
    socket.setdefaulttimeout(_DOWNLOAD_TIMEOUT_S)
    try:
        _torchvision_cifar10()(root=str(root), train=True, download=True)
    finally:
        socket.setdefaulttimeout(previous)


def _read(root: Path) -> ArrayData:
    reader = _torchvision_cifar10()
    splits = []
    try:
        for train in (True, False):
            dataset = reader(root=str(root), train=train, download=False)
            images = torch.from_numpy(np.ascontiguousarray(dataset.data.transpose(0, 3, 1, 2)))
            labels = torch.as_tensor(dataset.targets, dtype=torch.int64)
            splits.append((images, labels, tuple(str(c) for c in dataset.classes)))
    except (OSError, EOFError, pickle.UnpicklingError, KeyError, ValueError, TypeError,
            ImportError, AttributeError, IndexError) as exc:  # fmt: skip
        raise DataError(
            f"could not read CIFAR-10 from {root / FOLDER} ({describe_exception(exc)}); "
            f"the files are truncated or not the python version: delete them and fetch {URL} "
            "again"
        ) from exc
    (train_x, train_y, classes), (test_x, test_y, _) = splits
    for split, x, y in (("train", train_x, train_y), ("test", test_x, test_y)):
        if len(x) == 0 or len(y) != len(x) or not bool(((y >= 0) & (y < len(classes))).all()):
            raise DataError(
                f"CIFAR-10 in {root / FOLDER}: the {split} batches hold {len(x)} images and "
                f"{len(y)} labels for {len(classes)} classes; fetch {URL} again"
            )
    return ArrayData("cifar10", train_x, test_x, train_y, test_y, classes=classes)
