"""Figures of a run: image grids (torchvision), labelled rows of images, the loss curve.

Grids are drawn pixel for pixel (``torchvision.utils.make_grid``), in colour
for RGB images; small images are enlarged by whole factors (nearest
neighbour) so that every tile is at least :data:`MIN_DISPLAY_SIZE` pixels a
side. Values are drawn on [0, 1], 0 black and 1 white, clipped beyond; a run
whose data leave [0, 1] (a Gaussian likelihood on standardized data, say) is
drawn on its data's range instead, ``value_range`` (recorded in training as
``config.data.display_range``). Labels and plots take the look of
:mod:`pyrovae.reports.style`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import torch
import torch.nn.functional as F

from pyrovae.config import RunConfig
from pyrovae.data.dataset import is_image_shape
from pyrovae.data.pixels import display_range, display_values, to_unit_float
from pyrovae.errors import ConfigError, FileWriteError
from pyrovae.files import atomic_write
from pyrovae.reports.style import save_figure, styled_figure

#: Images smaller than this many pixels on their longer side are enlarged in grids
#: (nearest neighbour, by a whole factor) to at least this size: 8x8 digits to 64x64,
#: 28x28 MNIST to 84x84.
MIN_DISPLAY_SIZE = 64

#: The most values (tiles x channels x pixels) an enlarged grid may hold: a grid of
#: thousands of tiles is enlarged less, so that its memory stays bounded.
MAX_DISPLAY_VALUES = 1 << 24

#: Blank pixels between the groups of labelled rows (one group per
#: :data:`RECONSTRUCTION_COLUMNS` images).
GROUP_GAP = 12

#: Pixels of white between tiles and around the grid (torchvision's ``padding``).
GRID_PADDING = 2

#: The value of separators and of the blank tiles that fill a grid's last row:
#: white, so that a blank tile reads as no image rather than as a dark one.
BLANK = 1.0

#: The most tiles one grid holds (64 x 64): more cannot be told apart, and the
#: grid's memory grows with them. The CLI shows at most this many.
MAX_GRID_TILES = 4096

#: Columns of a reconstruction figure: a row of originals, then the row of their
#: reconstructions (and any other labelled rows) for each group of this many.
RECONSTRUCTION_COLUMNS = 8

#: File endings of image grids and the format each is written in.
IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}


def grid_columns(n: int) -> int:
    """Columns of a default grid of ``n`` images: a square, or nearly one."""
    return max(1, math.ceil(math.sqrt(n)))


def save_grid(
    images: torch.Tensor,
    path: str | Path,
    nrow: int | None = None,
    value_range: Sequence[float] | None = None,
) -> Path:
    """Write ``images`` ``(n, C, H, W)`` as one image grid; return ``path``.

    Values are drawn on [0, 1], or on ``value_range`` ``(least, greatest)`` where
    given (the run's ``config.data.display_range``), clipped beyond it.

    The grid has ``nrow`` columns (default :func:`grid_columns`) and is always
    rectangular: blank tiles fill its last row. The file is written through
    :func:`pyrovae.files.atomic_write`, at exactly ``path`` (a symlink is
    written through, a device is refused), in the format its suffix names
    (:data:`IMAGE_FORMATS`).
    """
    from torchvision.utils import save_image

    _check_images(tuple(images.shape))
    image_format = _image_format(path)
    nrow = nrow or grid_columns(images.shape[0])
    tiles = _blank_filled(_displayable(images, value_range), nrow)

    def write(handle: IO[bytes]) -> None:
        save_image(
            tiles, handle, format=image_format, nrow=nrow, padding=GRID_PADDING, pad_value=BLANK
        )

    atomic_write(path, write)
    return Path(path)


def save_reconstructions(
    originals: torch.Tensor,
    reconstructions: torch.Tensor,
    path: str | Path,
    value_range: Sequence[float] | None = None,
) -> Path:
    """Labelled rows of up to 8 originals, each above the row of their reconstructions
    (:func:`save_labelled_rows` with ``original`` and ``reconstruction``)."""
    if originals.shape != reconstructions.shape:
        raise ValueError(
            f"{tuple(originals.shape)} originals but {tuple(reconstructions.shape)} reconstructions"
        )
    rows = [("original", originals), ("reconstruction", reconstructions)]
    return save_labelled_rows(rows, path, value_range=value_range)


def save_labelled_rows(
    rows: Sequence[tuple[str, torch.Tensor]],
    path: str | Path,
    columns: int = RECONSTRUCTION_COLUMNS,
    value_range: Sequence[float] | None = None,
) -> Path:
    """Rows of images with their label written on the left, aligned column by column.

    For each group of up to ``columns`` images there is one row per entry of
    ``rows``, in order: ``[("original", x), ("reconstruction", x_hat)]``, or
    ``[("clean", x), ("corrupted", x_tilde), ("reconstructed", x_hat)]``; so
    image ``i`` of every entry sits in the same column. A last group of fewer
    than ``columns`` is filled with blank tiles. Tiles are enlarged as in
    :func:`save_grid`; the labels take :func:`pyrovae.reports.style.label_font`.

    Parameters
    ----------
    rows
        ``(label, images)`` pairs; every ``images`` is ``(n, C, H, W)``, all of
        one shape.
    path
        Where to write it; its suffix names the format (:data:`IMAGE_FORMATS`).
    columns
        Images per row.
    value_range
        ``(least, greatest)`` drawn as black and white, for every row alike
        (as :func:`save_grid`); ``None``: [0, 1].

    Returns
    -------
    Path
        ``path``.
    """
    if not rows:
        raise ValueError("save_labelled_rows needs at least one (label, images) row")
    shape = tuple(rows[0][1].shape)
    for label, images in rows:
        if tuple(images.shape) != shape:
            raise ValueError(f"row {label!r} holds {tuple(images.shape)} images, the first {shape}")
    _check_images(shape)
    image_format = _image_format(path)
    ncol = max(1, min(shape[0], columns))
    stacked = torch.stack([x.detach().cpu() for _, x in rows]).flatten(0, 1)
    displayed = _displayable(stacked, value_range)
    displayed = displayed.unflatten(0, (len(rows), shape[0]))  # (rows, n, C, H', W')
    groups = [
        _grid_pixels(
            torch.cat([_blank_filled(r[start : start + ncol], ncol) for r in displayed]), ncol
        )
        for start in range(0, shape[0], ncol)
    ]
    image = _with_labels(groups, [label for label, _ in rows], tile=displayed.shape[-2])
    atomic_write(path, lambda handle: image.save(handle, format=image_format))
    return Path(path)


def _grid_pixels(tiles: torch.Tensor, ncol: int) -> torch.Tensor:
    """``tiles`` as one ``uint8`` ``(H, W, 3)`` grid, as :func:`save_grid` draws it."""
    from torchvision.utils import make_grid

    grid = make_grid(tiles, nrow=ncol, padding=GRID_PADDING, pad_value=BLANK)
    # The rounding torchvision's save_image does, so both draw the same pixels.
    return grid.mul(255).add_(0.5).clamp_(0, 255).permute(1, 2, 0).to(torch.uint8)


def _with_labels(groups: list[torch.Tensor], labels: list[str], tile: int) -> Any:
    """The groups' grids stacked with :data:`GROUP_GAP` between them, and a left margin
    where each row's label stands level with its tiles; a PIL image."""
    from PIL import Image, ImageDraw

    from pyrovae.reports.style import TEXT_COLOR, label_font

    font = label_font()
    margin = int(max(font.getlength(label) for label in labels)) + 2 * GRID_PADDING + 12
    width = margin + groups[0].shape[1]
    height = sum(g.shape[0] for g in groups) + GROUP_GAP * (len(groups) - 1)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    top = 0
    for grid in groups:
        canvas.paste(Image.fromarray(grid.numpy()), (margin, top))
        for r, label in enumerate(labels):
            middle = top + GRID_PADDING + r * (tile + GRID_PADDING) + tile // 2
            draw.text((margin - 8, middle), label, fill=TEXT_COLOR, font=font, anchor="rm")
        top += grid.shape[0] + GROUP_GAP
    return canvas


def _check_images(shape: tuple[int, ...]) -> None:
    if not is_image_shape(shape[1:]):
        raise ConfigError(
            f"data points of shape {shape[1:]} are not images (C, H, W) with "
            "1 or 3 channels: no grid can show them; take them from Python "
            "(pyrovae.sample, pyrovae.reconstruct)"
        )


def _image_format(path: str | Path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in IMAGE_FORMATS:
        raise FileWriteError(f"{path} must end in {', '.join(IMAGE_FORMATS)}")
    return IMAGE_FORMATS[suffix]


def _displayable(images: torch.Tensor, value_range: Sequence[float] | None) -> torch.Tensor:
    """:func:`display_values` on ``value_range``; small images enlarged pixel for pixel to at least
    :data:`MIN_DISPLAY_SIZE` (less where that would pass :data:`MAX_DISPLAY_VALUES`)."""
    images = display_values(images, value_range)
    factor = max(1, math.ceil(MIN_DISPLAY_SIZE / max(images.shape[-2:])))
    while factor > 1 and images.numel() * factor**2 > MAX_DISPLAY_VALUES:
        factor -= 1
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


def train_curve_label(
    history: list[dict[str, Any]], *, objective: str = "elbo", kl_warmup: int = 0
) -> str:
    """What the training curve plots: the ELBO only where nothing weights or replaces it.

    With ``beta`` other than 1 in any epoch or a KL warm-up, the training loss
    is the beta-weighted objective E[log p(x|z)] - beta KL, not the ELBO; with
    ``objective="iwae"`` it is the importance-weighted bound.
    """
    if objective == "iwae":
        return "train: IWAE bound"
    weighted = kl_warmup > 0 or any(row.get("beta", 1.0) != 1.0 for row in history)
    return "train: objective (beta-weighted)" if weighted else "train: ELBO"


def save_loss_curve(
    history: list[dict[str, Any]],
    path: str | Path,
    *,
    objective: str = "elbo",
    kl_warmup: int = 0,
) -> Path:
    """The training objective (:func:`train_curve_label`) and the test ELBO per data point
    against epoch, in the style of :mod:`pyrovae.reports.style`."""

    from matplotlib.ticker import MaxNLocator

    epochs = [row["epoch"] for row in history]
    train_label = train_curve_label(history, objective=objective, kl_warmup=kl_warmup)
    with styled_figure(figsize=(6, 4)) as fig:
        ax = fig.subplots()
        ax.plot(epochs, [row["train_elbo"] for row in history], marker="o", label=train_label)
        # Epochs between evaluations (--eval-every) have no test figures.
        tested = [row for row in history if "test_elbo" in row]
        ax.plot(
            [r["epoch"] for r in tested],
            [r["test_elbo"] for r in tested],
            marker="o",
            label="test: ELBO",
        )
        validated = [row for row in history if "val_elbo" in row]
        if validated:
            ax.plot(
                [r["epoch"] for r in validated],
                [r["val_elbo"] for r in validated],
                marker="o",
                label="validation: ELBO",
            )
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("nats per data point (higher is better)")
        ax.set_title("ELBO" if train_label == "train: ELBO" else "Training objective and test ELBO")
        ax.legend()
        fig.tight_layout()
        save_figure(fig, path)
    return Path(path)


def save_run_figures(
    vae: Any, test_images: torch.Tensor, history: list[dict[str, Any]], run_dir: Path
) -> list[Path]:
    """``samples.png`` (64 draws), ``reconstructions.png`` (16 test images, labelled rows),
    ``loss_curve.png`` (labelled from the run's ``config.json``); only the loss curve where
    the data are not images (e.g. vectors ``(D,)``), and no samples for a model without a
    prior (an autoencoder)."""
    paths = []
    if is_image_shape(tuple(test_images.shape[1:])):
        originals = to_unit_float(test_images[:16])
        shown = display_range(test_images)  # as training records it (config.data)
        if vae.has_prior:  # an autoencoder has no prior to sample from
            paths.append(save_grid(vae.sample(64), run_dir / "samples.png", value_range=shown))
        reconstructions = vae.reconstruct(originals)
        path = run_dir / "reconstructions.png"
        paths.append(save_reconstructions(originals, reconstructions, path, value_range=shown))
    objective, kl_warmup = "elbo", 0
    if (run_dir / "config.json").is_file():
        train = RunConfig.load(run_dir / "config.json").train
        objective, kl_warmup = train.objective, train.kl_warmup
    curve = run_dir / "loss_curve.png"
    return [*paths, save_loss_curve(history, curve, objective=objective, kl_warmup=kl_warmup)]
