"""Tests of :mod:`pyrovae.reports.figures`: the pixel geometry of image grids, and that
figures are written through :mod:`pyrovae.files` at exactly the path given."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pyrovae.errors import FileWriteError
from pyrovae.reports.figures import (
    GRID_PADDING,
    MIN_DISPLAY_SIZE,
    grid_columns,
    save_grid,
    save_loss_curve,
    save_reconstructions,
)

TILE = MIN_DISPLAY_SIZE  # 8x8 images are enlarged 4x
STEP = TILE + GRID_PADDING


def distinct_images(n: int, start: int = 0) -> torch.Tensor:
    """``n`` constant 8x8 images whose grey levels k/255 (k = start + 1, ...) tell them apart."""
    levels = torch.arange(start + 1, start + n + 1, dtype=torch.float32) / 255
    return levels.view(n, 1, 1, 1).expand(n, 1, 8, 8).clone()


def read_tiles(path: Path) -> tuple[np.ndarray, int, int]:
    """Each tile's grey level ``(rows, cols)`` (255 where blank), after checking it is uniform."""
    pixels = np.asarray(Image.open(path).convert("L"), dtype=np.int64)
    height, width = pixels.shape
    rows, cols = (height - GRID_PADDING) // STEP, (width - GRID_PADDING) // STEP
    assert (height, width) == (rows * STEP + GRID_PADDING, cols * STEP + GRID_PADDING)
    levels = np.empty((rows, cols), dtype=np.int64)
    for r in range(rows):
        for c in range(cols):
            top, left = GRID_PADDING + r * STEP, GRID_PADDING + c * STEP
            tile = pixels[top : top + TILE, left : left + TILE]
            assert (tile == tile[0, 0]).all(), (r, c)
            levels[r, c] = tile[0, 0]
    return levels, rows, cols


@pytest.mark.parametrize(("n", "shape"), [(3, (2, 2)), (10, (3, 4)), (16, (4, 4)), (17, (4, 5))])
def test_sample_grid_is_rectangular_with_blank_tiles_last(tmp_path, n, shape):
    path = save_grid(distinct_images(n), tmp_path / "grid.png")
    levels, rows, cols = read_tiles(path)
    assert (rows, cols) == shape and cols == grid_columns(n)
    flat = levels.reshape(-1)
    assert flat[:n].tolist() == list(range(1, n + 1))  # row by row, in order
    assert (flat[n:] == 255).all()  # blank (white) tiles fill the last row


def test_a_single_image_is_written_alone(tmp_path):
    # torchvision's make_grid returns one image as it is, with no border.
    path = save_grid(distinct_images(1), tmp_path / "one.png")
    assert np.asarray(Image.open(path).convert("L")).tolist() == [[1] * TILE] * TILE


@pytest.mark.parametrize("n", [1, 5, 8, 10, 16, 21])
def test_reconstructions_stay_below_their_originals(tmp_path, n):
    originals = distinct_images(n)
    recons = distinct_images(n, start=100)
    levels, rows, cols = read_tiles(save_reconstructions(originals, recons, tmp_path / "r.png"))
    assert cols == min(n, 8) and rows == 2 * -(-n // 8)
    for i in range(n):
        group, c = divmod(i, cols)
        assert levels[2 * group, c] == i + 1  # the original
        assert levels[2 * group + 1, c] == i + 101  # directly below: its reconstruction
    blanks = levels[-2:, n - (rows // 2 - 1) * cols :]
    assert (blanks == 255).all()  # the last group is filled with blank tiles, both rows


def test_reconstructions_must_pair_up(tmp_path):
    with pytest.raises(ValueError, match="reconstructions"):
        save_reconstructions(distinct_images(3), distinct_images(2), tmp_path / "r.png")


def test_grid_format_follows_the_suffix_and_path_is_exact(tmp_path):
    for name, fmt in (("a.png", "PNG"), ("b.JPG", "JPEG"), ("c.jpeg", "JPEG")):
        path = save_grid(distinct_images(4), tmp_path / name)
        assert path == tmp_path / name and Image.open(path).format == fmt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.JPG", "c.jpeg"]
    with pytest.raises(FileWriteError, match="must end in"):
        save_grid(distinct_images(4), tmp_path / "d.gif")


def test_figures_write_through_symlinks_and_refuse_devices(tmp_path):
    target = tmp_path / "real.png"
    target.write_bytes(b"old")
    link = tmp_path / "link.png"
    link.symlink_to(target)
    save_grid(distinct_images(4), link)
    assert link.is_symlink() and Image.open(target).size == (2 * STEP + 2, 2 * STEP + 2)
    history = [{"epoch": 1, "train_elbo": -50.0, "test_elbo": -51.0}]
    curve_link = tmp_path / "curve.png"
    curve_link.symlink_to(target)
    save_loss_curve(history, curve_link)
    assert curve_link.is_symlink() and Image.open(target).format == "PNG"
    if os.path.exists("/dev/full") and stat.S_ISCHR(os.stat("/dev/full").st_mode):
        with pytest.raises(FileWriteError, match="not a regular file"):
            save_grid(distinct_images(4), _device_png(tmp_path))
    assert not list(tmp_path.glob(".*.tmp*"))  # no temporary file left behind


def _device_png(tmp_path: Path) -> Path:
    """A ``.png`` path that is a symlink to the device /dev/full."""
    link = tmp_path / "device.png"
    link.symlink_to("/dev/full")
    return link
