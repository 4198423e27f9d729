"""MNIST and Fashion-MNIST from their four IDX files, read with torchvision.

MNIST: LeCun, Bottou, Bengio & Haffner (1998), "Gradient-based learning
applied to document recognition", Proc. IEEE 86(11). Fashion-MNIST: Xiao,
Rasul & Vollgraf (2017), arXiv:1708.07747. The files are looked for in
``--data-dir`` alone when it is given, else in Debian's
``/usr/share/datasets/fashion-mnist`` and a cache folder, and downloaded by
torchvision when none holds them.
"""

from __future__ import annotations

import gzip
import os
import shutil
import socket
import tempfile
import zlib
from pathlib import Path

import torch

from pyrovae.data.dataset import ArrayData
from pyrovae.errors import DataError, describe_exception
from pyrovae.files import new_folders_removed_on_failure

# The four IDX files of MNIST and Fashion-MNIST, as LeCun's site and torchvision
# name them (each may also be gzipped).
_IDX_FILES: tuple[str, ...] = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

TORCHVISION_CLASS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}

# Debian's dataset-fashion-mnist package installs the four .gz files here.
_SYSTEM_DIRS: dict[str, tuple[Path, ...]] = {
    "fashion-mnist": (Path("/usr/share/datasets/fashion-mnist"),),
}

# torchvision's downloader sets no socket timeout, so a firewalled machine
# could otherwise hang rather than fail.
_DOWNLOAD_TIMEOUT_S = 30.0


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
    try:
        if not folder.is_dir():
            return None, "no such folder"
        found = {stem: _find_idx_file(folder, stem) for stem in _IDX_FILES}
    except OSError as exc:  # a name too long, a folder we may not read
        return None, describe_exception(exc)
    missing = [stem for stem, path in found.items() if path is None]
    if not missing:
        return {stem: path for stem, path in found.items() if path is not None}, ""
    if len(missing) == len(_IDX_FILES):
        return None, "none of the four files"
    return None, "missing " + ", ".join(missing)


def load_idx_set(key: str, data_dir: str | os.PathLike[str] | None, download: bool) -> ArrayData:
    class_name = TORCHVISION_CLASS[key]
    # A --data-dir given is the one place looked in (and downloaded into): a run records
    # it as where its data came from, so another copy must not stand in for it unsaid.
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        candidates = [root, root / class_name / "raw"]
    else:
        root = _cache_dir(key)
        candidates = [*_SYSTEM_DIRS.get(key, ()), root, root / class_name / "raw"]

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
            outcome = f"download into {root} failed ({describe_exception(exc)})"
        else:
            files, problem = _find_idx_files(root / class_name / "raw")
            if files is not None:
                return _read_idx_set(key, files)
            outcome = f"download into {root} left no usable files ({problem})"

    apt = ", `apt-get install dataset-fashion-mnist`" if key == "fashion-mnist" else ""
    if data_dir is not None:
        held = [str(d) for d in _SYSTEM_DIRS.get(key, ()) if _find_idx_files(d)[0] is not None]
        if held:
            apt = (
                f", or leave out --data-dir to read the copy in {held[0]} (for a run, set "
                "data.data_dir to that folder in its config.json: a run trained before "
                "pyrovae looked in --data-dir alone read that copy)"
            )
    raise DataError(
        f"{key} not found: looked for {', '.join(_IDX_FILES)} (raw or .gz) in "
        f"{'; '.join(looked)}; {outcome}. Fix: pass --data-dir DIR holding those four "
        f"files{apt}, or run once with network access and download enabled"
    )


def _download_idx_set(key: str, root: Path) -> None:
    from torchvision import datasets

    dataset_class = getattr(datasets, TORCHVISION_CLASS[key])
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(_DOWNLOAD_TIMEOUT_S)
    try:
        # Downloads all four files into root/<Class>/raw; we then read them
        # with the same code path as a local copy.
        with new_folders_removed_on_failure(root / TORCHVISION_CLASS[key] / "raw"):
            root.mkdir(parents=True, exist_ok=True)
            dataset_class(root=str(root), train=True, download=True)
    finally:
        socket.setdefaulttimeout(previous)


def _read_idx_set(key: str, files: dict[str, Path]) -> ArrayData:
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
    from torchvision import datasets

    classes = tuple(getattr(datasets, TORCHVISION_CLASS[key]).classes)  # e.g. "T-shirt/top"
    return ArrayData(key, train, test, train_labels, test_labels, classes=classes)


def _read_idx_file(path: Path, tmp: Path, *, images: bool) -> torch.Tensor:
    from torchvision.datasets.mnist import read_image_file, read_label_file

    reader = read_image_file if images else read_label_file
    raw = tmp / path.stem if path.suffix == ".gz" else path
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as src, open(raw, "wb") as dst:
                shutil.copyfileobj(src, dst)
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
        if _declared_count(raw) == 0:
            raise DataError(
                f"{path} holds 0 {kind}s (its header says so): the set is empty; fetch the "
                "file again"
            ) from exc
        raise DataError(
            f"could not read {path} as an IDX {kind} file ({describe_exception(exc)}); "
            "it is truncated or not an IDX file: delete it and fetch it again"
        ) from exc


def _declared_count(raw: Path) -> int | None:
    """The item count an IDX file's header declares (its first dimension), if readable."""
    try:
        with open(raw, "rb") as handle:
            header = handle.read(8)
    except OSError:
        return None
    # Magic: two zero bytes, 0x08 (unsigned bytes), then 1 or 3 dimensions; a zero-filled
    # file (an interrupted download) has no header to believe.
    if len(header) < 8 or header[:3] != b"\x00\x00\x08" or header[3] not in (1, 3):
        return None
    return int.from_bytes(header[4:8], "big")
