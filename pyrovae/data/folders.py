"""Images from a folder of PNG/JPEG files (class subfolders give labels)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pyrovae.errors import DataError, describe_exception

_IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES and not p.name.startswith(".")
    )


def list_image_folder(folder: Path) -> tuple[list[Path], torch.Tensor | None]:
    """The image files of a folder in the set's order; labels where subfolders are classes."""
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
        return top, None
    if not classes:
        raise DataError(
            f"{folder} holds no PNG or JPEG images (looked at its top level and its "
            "immediate subfolders): the data set is empty"
        )
    files = [f for _, class_files in classes for f in class_files]
    labels = torch.tensor(
        [i for i, (_, class_files) in enumerate(classes) for _ in class_files],
        dtype=torch.int64,
    )
    return files, labels


def read_image_folder(folder: Path) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Read a folder of same-size images; subfolders, if used, are the classes."""
    files, labels = list_image_folder(folder)
    first = read_image(files[0])  # (H, W, C) uint8
    images = np.empty((len(files), first.shape[2], *first.shape[:2]), dtype=np.uint8)
    for i, path in enumerate(files):
        pixels = first if i == 0 else read_image(path)
        if pixels.shape != first.shape:
            _refuse_mismatch(folder, files[0], first.shape, path, pixels.shape)
        images[i] = pixels.transpose(2, 0, 1)
    return torch.from_numpy(images), labels


def _refuse_mismatch(
    folder: Path, first: Path, first_shape: tuple[int, ...], path: Path, shape: tuple[int, ...]
) -> None:
    a, b = first.relative_to(folder), path.relative_to(folder)
    if shape[2] != first_shape[2]:
        mode = {1: "grayscale", 3: "RGB"}
        raise DataError(
            f"images in {folder} mix grayscale and RGB: {a} is {mode[first_shape[2]]} "
            f"but {b} is {mode[shape[2]]}; convert them all to one mode"
        )
    raise DataError(
        f"images in {folder} differ in size: {a} is {first_shape[1]}x{first_shape[0]} "
        f"but {b} is {shape[1]}x{shape[0]} (width x height); "
        "resize them all to one size"
    )


def check_headers(files: list[Path], folder: Path) -> None:
    """Every image's size and mode from its header, as :func:`read_image_folder` checks them
    (no pixels decoded: a streamed folder is checked in seconds)."""
    from PIL import Image

    def shape(path: Path) -> tuple[int, int, int]:
        try:
            with Image.open(path) as image:
                width, height = image.size
                channels = 1 if image.mode in ("1", "L", "LA") else 3
        except Exception as exc:  # PIL's decoders raise many types on a corrupt file
            raise DataError(f"could not read image {path} ({describe_exception(exc)})") from exc
        return height, width, channels

    first = shape(files[0])
    for path in files[1:]:
        if (this := shape(path)) != first:
            _refuse_mismatch(folder, files[0], first, path, this)


def read_image(path: Path) -> np.ndarray:
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
            f"image {path} is too large to read safely ({describe_exception(exc)}); "
            "resize it or take it out of the folder"
        ) from exc
    except Exception as exc:  # PIL's decoders raise many types on a corrupt file
        raise DataError(f"could not read image {path} ({describe_exception(exc)})") from exc


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
