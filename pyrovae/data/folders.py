"""Images from a folder: torchvision's ``ImageFolder`` (class subfolders give labels)
or a flat folder (no labels), read with torchvision transforms.

Every image is decoded by PIL (refusing decompression bombs and modes that are
not 8-bit), converted to ``--channels`` (``L`` or ``RGB``, as PIL's
``convert``; the ITU-R 601-2 luma for RGB to grayscale, as torchvision's
``Grayscale``), then resized so that its shorter side is ``--image-size`` and
center-cropped to a square of that side (``transforms.v2.Resize`` with
antialiasing, ``CenterCrop``), as DCGAN and most VAE papers prepare CelebA.
Without ``--image-size`` the images are kept pixel for pixel and must all be
of one size, which is checked from their headers before any is decoded.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pyrovae.errors import DataError, describe_exception

_IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
_MODES = {1: "grayscale", 3: "RGB"}


def _is_image(path: str | Path) -> bool:
    path = Path(path)
    return path.suffix.lower() in _IMAGE_SUFFIXES and not path.name.startswith(".")


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and _is_image(p))


class ImageReader:
    """One image file as a ``uint8`` tensor ``(C, H, W)``: decoded, converted, resized.

    Parameters
    ----------
    image_size
        Side of the square the image is resized (shorter side) and
        center-cropped to; ``None`` keeps it as it is.
    channels
        1 (grayscale) or 3 (RGB) to convert to; ``None`` keeps the file's mode
        (grayscale stays 1 channel, anything else becomes RGB).

    A plain object of two numbers, so that DataLoader workers can take it.
    """

    def __init__(self, image_size: int | None = None, channels: int | None = None) -> None:
        self.image_size, self.channels = image_size, channels
        self._transform: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {"image_size": self.image_size, "channels": self.channels, "_transform": None}

    def __call__(self, path: Path) -> torch.Tensor:
        return self.transform(self.load(path))

    def load(self, path: str | Path) -> Any:
        """The file as a PIL image of mode ``L`` or ``RGB`` (``ImageFolder``'s loader)."""
        return read_pil_image(Path(path), self.channels, self.image_size)

    def transform(self, image: Any) -> torch.Tensor:
        """A PIL image as ``(C, H, W)`` ``uint8``, resized and cropped to ``image_size``."""
        if self._transform is None:
            from torchvision.transforms import v2

            steps: list[Any] = []
            if self.image_size is not None:
                steps += [
                    v2.Resize(self.image_size, antialias=True),
                    v2.CenterCrop(self.image_size),
                ]
            self._transform = v2.Compose([*steps, v2.PILToTensor()])
        return self._transform(image)


@dataclass
class FolderListing:
    """The image files of a folder in the set's order, and their classes where it has them."""

    files: list[Path]
    labels: torch.Tensor | None
    classes: tuple[str, ...] | None


def list_image_folder(folder: Path) -> FolderListing:
    """List a flat folder (no labels), or class subfolders through torchvision's ``ImageFolder``."""
    top = _image_files(folder)
    subfolders = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    nested = next((d for d in subfolders if any(_is_image(p) for p in d.iterdir())), None)
    if top and nested is not None:
        raise DataError(
            f"{folder} has images both at its top level ({top[0].name}) and in subfolders "
            f"({nested.name}/): put all images directly in the folder, or all in one "
            "subfolder per class"
        )
    if top:
        return FolderListing(top, None, None)
    samples, classes = _class_folders(folder) if subfolders else ([], ())
    if not samples:
        raise DataError(
            f"{folder} holds no PNG or JPEG images (looked at its top level and its "
            "subfolders): the data set is empty"
        )
    files = [Path(path) for path, _ in samples]
    labels = torch.tensor([label for _, label in samples], dtype=torch.int64)
    counts = torch.bincount(labels, minlength=len(classes))
    if (counts == 0).any():  # a class no model could learn (torchvision refuses it too)
        empty = classes[int((counts == 0).nonzero()[0, 0])]
        raise DataError(
            f"the class folder {folder / empty} holds no PNG or JPEG images: remove it, "
            "or add its images (every subfolder is a class)"
        )
    return FolderListing(files, labels, classes)


def _class_folders(folder: Path) -> tuple[list[tuple[str, int]], tuple[str, ...]]:
    """``ImageFolder``'s samples (path, class index) and class names; hidden folders skipped."""
    from torchvision.datasets import ImageFolder

    class Visible(ImageFolder):
        def find_classes(self, directory: Any) -> tuple[list[str], dict[str, int]]:
            names = sorted(
                d.name for d in Path(directory).iterdir() if d.is_dir() and d.name[0] != "."
            )
            return names, {name: i for i, name in enumerate(names)}

    found = Visible(str(folder), is_valid_file=_is_image, allow_empty=True)
    return list(found.samples), tuple(found.classes)


def read_image_folder(folder: Path, listing: FolderListing, reader: ImageReader) -> torch.Tensor:
    """Every image of ``listing`` as one ``uint8`` tensor ``(N, C, H, W)``."""
    check_headers(listing.files, folder, reader)
    first = reader(listing.files[0])  # (C, H, W)
    images = torch.empty((len(listing.files), *first.shape), dtype=torch.uint8)
    images[0] = first
    for i, path in enumerate(listing.files[1:], start=1):
        images[i] = reader(path)
    return images


def check_headers(files: list[Path], folder: Path, reader: ImageReader) -> None:
    """Every image's size and mode from its header where ``reader`` keeps them: one size
    unless it resizes, one mode unless it converts (no pixels decoded, so a streamed
    folder is checked in seconds)."""
    if reader.image_size is not None and reader.channels is not None:
        return  # any size and mode will do; unreadable files fail when read
    first = _header(files[0])
    check_mode_supported(files[0], first[3])
    for path in files[1:]:
        this = _header(path)
        check_mode_supported(path, this[3])  # before a mix of modes is blamed on --channels
        if reader.channels is None and this[2] != first[2]:
            a, b = files[0].relative_to(folder), path.relative_to(folder)
            raise DataError(
                f"images in {folder} mix grayscale and RGB: {a} is {_mode(first)} "
                f"but {b} is {_mode(this)}; pass --channels 1 or --channels 3 to "
                "convert them all"
            )
        if reader.image_size is None and this[:2] != first[:2]:
            a, b = files[0].relative_to(folder), path.relative_to(folder)
            raise DataError(
                f"images in {folder} differ in size: {a} is {first[1]}x{first[0]} "
                f"but {b} is {this[1]}x{this[0]} (width x height); pass --image-size N "
                "to resize and center-crop them all to N x N"
            )


#: PIL modes read as 8-bit pixels (a palette, "P"/"PA", is read through RGBA).
READ_MODES = ("1", "L", "LA", "RGB", "RGBA", "CMYK", "YCbCr", "P", "PA")


def check_mode_supported(path: Path, mode: str) -> None:
    """Refuse a PIL mode that is not 8-bit pixels (16-bit, 32-bit integer or float)."""
    if mode not in READ_MODES:
        raise DataError(
            f"{path}: pixel mode {mode} (e.g. 16-bit or float) is not supported; "
            "save the images as 8-bit grayscale or RGB"
        )


def _mode(header: tuple[int, int, int, str]) -> str:
    """What an image of this header is read as, with PIL's mode where that differs."""
    read = _MODES[header[2]]
    return read if header[3] in ("L", read) else f"{header[3]}, read as {read}"


def _header(path: Path) -> tuple[int, int, int, str]:
    """``(height, width, channels, PIL mode)`` from the file's header."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                channels = 1 if image.mode in ("1", "L", "LA") else 3
    except Exception as exc:  # PIL's decoders raise many types on a corrupt file
        raise _unreadable(path, exc) from exc
    return height, width, channels, image.mode


def read_pil_image(path: Path, channels: int | None = None, at_least: int | None = None) -> Any:
    """One image file as a PIL image of mode ``L`` (grayscale) or ``RGB``.

    With ``at_least``, a JPEG is decoded at the smallest of its DCT scales
    (1/2, 1/4, 1/8) that keeps both sides at least ``at_least`` pixels (PIL's
    ``draft``, as its ``thumbnail`` does): a photo about to be shrunk is
    decoded several times faster, and the scaling averages pixels, as an
    antialiased resize would.

    An image above PIL's pixel limit (``Image.MAX_IMAGE_PIXELS``, where PIL
    warns of a decompression bomb, or twice that, where it refuses) is a
    :class:`DataError`, as is any file PIL cannot decode.
    """
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if at_least is not None and image.format == "JPEG":
                    image.draft(None, (at_least, at_least))
                return _converted(image, path, channels)
    except DataError:
        raise
    except Exception as exc:  # PIL's decoders raise many types on a corrupt file
        raise _unreadable(path, exc) from exc


def _unreadable(path: Path, exc: Exception) -> DataError:
    from PIL import Image

    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return DataError(
            f"image {path} is too large to read safely ({describe_exception(exc)}); "
            "resize it or take it out of the folder"
        )
    return DataError(f"could not read image {path} ({describe_exception(exc)})")


def _converted(image: Any, path: Path, channels: int | None) -> Any:
    mode = image.mode
    if mode in ("P", "PA"):
        # Via RGBA so that palette transparency is resolved, not warned about.
        image, mode = image.convert("RGBA"), "RGBA"
    else:
        check_mode_supported(path, mode)
    gray = mode in ("1", "L", "LA")
    # Binary images become 0/255; alpha is dropped (a VAE models pixels only).
    target = "L" if channels == 1 or (channels is None and gray) else "RGB"
    if target == "L" and not gray:
        image = image.convert("RGB")  # alpha dropped before the luma is taken
    return image.convert(target)
