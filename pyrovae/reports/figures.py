"""Figures of a run: image grids (torchvision) and the loss curve (matplotlib)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import IO, Any

import torch
import torch.nn.functional as F

from pyrovae.data.dataset import is_image_shape
from pyrovae.data.pixels import to_unit_float
from pyrovae.errors import ConfigError, FileWriteError
from pyrovae.files import atomic_write

#: Images smaller than this many pixels on a side are enlarged in grids.
MIN_DISPLAY_SIZE = 32

#: Pixels of white between tiles and around the grid (torchvision's ``padding``).
GRID_PADDING = 2

#: The value of separators and of the blank tiles that fill a grid's last row:
#: white, so that a blank tile reads as no image rather than as a dark one.
BLANK = 1.0

#: The most tiles one grid holds (64 x 64): more cannot be told apart, and the
#: grid's memory grows with them. The CLI shows at most this many.
MAX_GRID_TILES = 4096

#: Columns of a reconstruction grid: rows of originals alternate with rows of
#: their reconstructions.
RECONSTRUCTION_COLUMNS = 8

#: File endings of image grids and the format each is written in.
IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}


def grid_columns(n: int) -> int:
    """Columns of a default grid of ``n`` images: a square, or nearly one."""
    return max(1, math.ceil(math.sqrt(n)))


def save_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None) -> Path:
    """Write ``images`` ``(n, C, H, W)`` in [0, 1] as one image grid; return ``path``.

    The grid has ``nrow`` columns (default :func:`grid_columns`) and is always
    rectangular: blank tiles fill its last row. The file is written through
    :func:`pyrovae.files.atomic_write`, at exactly ``path`` (a symlink is
    written through, a device is refused), in the format its suffix names
    (:data:`IMAGE_FORMATS`).
    """
    from torchvision.utils import save_image

    if not is_image_shape(tuple(images.shape[1:])):
        raise ConfigError(
            f"data points of shape {tuple(images.shape[1:])} are not images (C, H, W) with "
            "1 or 3 channels: no grid can show them; take them from Python "
            "(pyrovae.sample, pyrovae.reconstruct)"
        )
    image_format = _image_format(path)
    nrow = nrow or grid_columns(images.shape[0])
    tiles = _blank_filled(_displayable(images), nrow)

    def write(handle: IO[bytes]) -> None:
        save_image(
            tiles, handle, format=image_format, nrow=nrow, padding=GRID_PADDING, pad_value=BLANK
        )

    atomic_write(path, write)
    return Path(path)


def save_reconstructions(
    originals: torch.Tensor, reconstructions: torch.Tensor, path: str | Path
) -> Path:
    """Rows of up to 8 originals, each row above the row of their reconstructions.

    Each reconstruction sits directly below its original; a last group of
    fewer than 8 is filled with blank tiles, so the pairs stay aligned.
    """
    if originals.shape != reconstructions.shape:
        raise ValueError(
            f"{tuple(originals.shape)} originals but {tuple(reconstructions.shape)} reconstructions"
        )
    ncol = min(originals.shape[0], RECONSTRUCTION_COLUMNS)
    rows = []
    for start in range(0, originals.shape[0], ncol):
        rows += [
            _blank_filled(originals[start : start + ncol], ncol),
            _blank_filled(reconstructions[start : start + ncol], ncol),
        ]
    return save_grid(torch.cat(rows), path, nrow=ncol)


def _image_format(path: str | Path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in IMAGE_FORMATS:
        raise FileWriteError(f"{path} must end in {', '.join(IMAGE_FORMATS)}")
    return IMAGE_FORMATS[suffix]


def _displayable(images: torch.Tensor) -> torch.Tensor:
    """Float pixels in [0, 1] on the CPU; small images (8x8 digits) enlarged pixel for pixel."""
    images = images.detach().float().clamp(0, 1).cpu()
    factor = max(1, MIN_DISPLAY_SIZE // max(images.shape[-2:]))
    if factor > 1:
        images = F.interpolate(images, scale_factor=factor, mode="nearest")
    return images


def _blank_filled(images: torch.Tensor, ncol: int) -> torch.Tensor:
    """``images`` followed by blank tiles up to a whole number of rows of ``ncol``."""
    missing = -images.shape[0] % ncol
    if not missing:
        return images
    blank = torch.full((missing, *images.shape[1:]), BLANK, dtype=images.dtype)
    return torch.cat([images, blank.to(images.device)])


def save_loss_curve(history: list[dict[str, Any]], path: str | Path) -> Path:
    """Train and test ELBO per data point against epoch."""
    from pyrovae.reports.html import new_figure

    path = Path(path)
    epochs = [row["epoch"] for row in history]
    fig = new_figure(figsize=(6, 4))
    ax = fig.subplots()
    ax.plot(epochs, [row["train_elbo"] for row in history], marker=".", label="train")
    # Epochs between evaluations (--eval-every) have no test figures.
    tested = [row for row in history if "test_elbo" in row]
    ax.plot([r["epoch"] for r in tested], [r["test_elbo"] for r in tested], marker=".",
            label="test")  # fmt: skip
    validated = [row for row in history if "val_elbo" in row]
    if validated:
        ax.plot([r["epoch"] for r in validated], [r["val_elbo"] for r in validated],
                marker=".", label="validation")  # fmt: skip
    ax.set_xlabel("epoch")
    ax.set_ylabel("ELBO per data point (nats)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=100))
    return path


def save_run_figures(
    vae: Any, test_images: torch.Tensor, history: list[dict[str, Any]], run_dir: Path
) -> list[Path]:
    """``samples.png`` (64 draws), ``reconstructions.png`` (16 test images), ``loss_curve.png``;
    only the loss curve where the data are not images (e.g. vectors ``(D,)``)."""
    if not is_image_shape(tuple(test_images.shape[1:])):
        return [save_loss_curve(history, run_dir / "loss_curve.png")]
    originals = to_unit_float(test_images[:16])
    return [
        save_grid(vae.sample(64), run_dir / "samples.png"),
        save_reconstructions(
            originals, vae.reconstruct(originals), run_dir / "reconstructions.png"
        ),
        save_loss_curve(history, run_dir / "loss_curve.png"),
    ]
