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
    GROUP_GAP,
    MIN_DISPLAY_SIZE,
    grid_columns,
    save_grid,
    save_labelled_rows,
    save_loss_curve,
    save_reconstructions,
    train_curve_label,
)

TILE = MIN_DISPLAY_SIZE  # 8x8 images are enlarged 8x
STEP = TILE + GRID_PADDING


def distinct_images(n: int, start: int = 0) -> torch.Tensor:
    """``n`` constant 8x8 images whose grey levels k/255 (k = start + 1, ...) tell them apart."""
    levels = torch.arange(start + 1, start + n + 1, dtype=torch.float32) / 255
    return levels.view(n, 1, 1, 1).expand(n, 1, 8, 8).clone()


def read_tiles(path: Path | np.ndarray) -> tuple[np.ndarray, int, int]:
    """Each tile's grey level ``(rows, cols)`` (255 where blank), after checking it is uniform."""
    if isinstance(path, Path):
        pixels = np.asarray(Image.open(path).convert("L"), dtype=np.int64)
    else:
        pixels = path
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


def read_labelled(path: Path, per_group: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """The tiles' grey levels of a labelled-rows figure ``(rows, cols)``, group after group,
    and its label margin (pixels left of the grids)."""
    pixels = np.asarray(Image.open(path).convert("L"), dtype=np.int64)
    grid_width = cols * STEP + GRID_PADDING
    group_height = per_group * STEP + GRID_PADDING
    margin, grids = pixels[:, :-grid_width], pixels[:, -grid_width:]
    n_groups = (pixels.shape[0] + GROUP_GAP) // (group_height + GROUP_GAP)
    assert pixels.shape[0] == n_groups * (group_height + GROUP_GAP) - GROUP_GAP
    levels = []
    for g in range(n_groups):
        top = g * (group_height + GROUP_GAP)
        levels.append(read_tiles(grids[top : top + group_height])[0])
        assert (grids[top + group_height : top + group_height + GROUP_GAP] == 255).all()
    return np.concatenate(levels), margin


@pytest.mark.parametrize("n", [1, 5, 8, 10, 16, 21])
def test_reconstructions_stay_below_their_originals(tmp_path, n):
    originals = distinct_images(n)
    recons = distinct_images(n, start=100)
    path = save_reconstructions(originals, recons, tmp_path / "r.png")
    cols = min(n, 8)
    levels, _ = read_labelled(path, 2, cols)
    rows = levels.shape[0]
    assert levels.shape[1] == cols and rows == 2 * -(-n // 8)
    for i in range(n):
        group, c = divmod(i, cols)
        assert levels[2 * group, c] == i + 1  # the original
        assert levels[2 * group + 1, c] == i + 101  # directly below: its reconstruction
    blanks = levels[-2:, n - (rows // 2 - 1) * cols :]
    assert (blanks == 255).all()  # the last group is filled with blank tiles, both rows


def test_labelled_rows_in_colour_with_a_label_level_with_each_row(tmp_path):
    n, cols, (height, width) = 10, 4, (70, 50)  # 7x5 images enlarged 10x: the longer side >= 64
    colours = torch.randint(0, 256, (3, n, 3, 1, 1)).float() / 255  # (rows, n, RGB, 1, 1)
    names = ("clean", "corrupted", "reconstructed")
    rows = [(name, colours[r].expand(n, 3, 7, 5)) for r, name in enumerate(names)]
    path = save_labelled_rows(rows, tmp_path / "rows.png", columns=cols)
    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.int64)
    step_down, step_right = height + GRID_PADDING, width + GRID_PADDING
    group_height = 3 * step_down + GRID_PADDING
    assert rgb.shape[0] == 3 * group_height + 2 * GROUP_GAP  # 10 images: groups of 4, 4, 2
    grid_left = rgb.shape[1] - (cols * step_right + GRID_PADDING)
    for r in range(3):
        for i in range(n):
            group, c = divmod(i, cols)
            top = group * (group_height + GROUP_GAP) + GRID_PADDING + r * step_down
            left = grid_left + GRID_PADDING + c * step_right
            expected = (colours[r, i, :, 0, 0] * 255).round().long().numpy()
            assert (rgb[top : top + height, left : left + width] == expected).all(), (r, i)
        # The label: dark text in the margin, level with its row (of the first group).
        band = rgb[GRID_PADDING + r * step_down :][:height, :grid_left]
        assert (band.max(axis=2) < 128).any(), r
    assert (rgb[:GRID_PADDING, :grid_left] == 255).all()  # nothing above the first row


def test_labelled_rows_must_match(tmp_path):
    with pytest.raises(ValueError, match="holds"):
        save_labelled_rows(
            [("a", distinct_images(3)), ("b", distinct_images(4))], tmp_path / "x.png"
        )
    with pytest.raises(ValueError, match="at least one"):
        save_labelled_rows([], tmp_path / "x.png")


def test_loss_curve_names_what_it_plots():
    plain = [{"epoch": 1, "train_elbo": -50.0, "test_elbo": -51.0, "beta": 1.0}]
    assert train_curve_label(plain) == "train: ELBO"
    assert train_curve_label(plain, kl_warmup=1) == "train: objective (beta-weighted)"
    weighted = [{**plain[0], "beta": 0.5}]
    assert train_curve_label(weighted) == "train: objective (beta-weighted)"
    assert train_curve_label(plain, objective="iwae") == "train: IWAE bound"


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


def test_run_figures_label_the_curve_from_the_runs_config(tmp_path, monkeypatch):
    from pyrovae.config import ModelConfig, RunConfig, TrainConfig
    from pyrovae.reports import figures

    model = ModelConfig(data_shape=(5,))
    RunConfig(model=model, train=TrainConfig(kl_warmup=3)).save(tmp_path / "config.json")
    seen = {}

    def record(history, path, **options):
        seen.update(options)
        return Path(path)

    monkeypatch.setattr(figures, "save_loss_curve", record)
    vectors = torch.rand(4, 5)  # not images: the loss curve only
    assert figures.save_run_figures(None, vectors, [], tmp_path) == [tmp_path / "loss_curve.png"]
    assert seen == {"objective": "elbo", "kl_warmup": 3}


def test_a_value_range_draws_data_beyond_the_unit_interval_and_none_clips(tmp_path):
    # Standardized data (a Gaussian likelihood's) are drawn on the data's range, the
    # originals and reconstructions alike; without one, values are clipped to [0, 1].
    originals = torch.linspace(-2.0, 2.0, 5).view(5, 1, 1, 1).expand(5, 1, 8, 8).clone()
    recons = originals / 2
    path = save_reconstructions(originals, recons, tmp_path / "r.png", value_range=(-2.0, 2.0))
    levels, _ = read_labelled(path, 2, 5)
    assert levels[0].tolist() == [0, 64, 128, 191, 255]  # -2 .. 2 over 0 .. 255
    assert levels[1].tolist() == [64, 96, 128, 159, 191]  # -1 .. 1 on the same scale
    grid, _, _ = read_tiles(save_grid(originals, tmp_path / "g.png"))
    assert grid.tolist() == [[0, 0, 0], [255, 255, 255]]  # clipped: 0, 0, 0, 1, 1, blank


def test_display_range_is_the_datas_where_they_leave_the_unit_interval():
    from pyrovae.data.pixels import display_range

    assert display_range(torch.rand(4, 1, 3, 3)) is None
    assert display_range(torch.full((2, 1, 3, 3), 255, dtype=torch.uint8)) is None
    x = torch.tensor([[-1.5, 0.2], [float("nan"), 3.0]])
    assert display_range(x) == [-1.5, 3.0]  # missing values (NaN) left out
    # One value: drawn mid-grey, the range padded in proportion to its size.
    assert display_range(torch.full((2, 3), 2.0)) == [1.0, 3.0]
    assert display_range(torch.full((2, 3), -1e8)) == [-1.5e8, -0.5e8]
