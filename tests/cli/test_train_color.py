"""``pyrovae train`` on a folder of colour images of mixed sizes: ``--image-size`` and
``--channels`` reach the loader, the conv network is sized from the image, the Gaussian and
continuous-Bernoulli likelihoods train on (3, H, W), and the run's grids are in colour."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from pyrovae.cli import main

TINY = ["--hidden", "16", "--latent-dim", "2", "--epochs", "1", "--batch-size", "8"]


def write_faces(root: Path, n: int = 12) -> None:
    """``n`` colour PNGs of assorted sizes (a stand-in for a CelebA-style folder)."""
    rng = np.random.default_rng(0)
    root.mkdir()
    for i in range(n):
        height, width = (18 + 3 * i % 11, 20 + 5 * i % 13)
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(
            root / f"face_{i:03d}.png"
        )


@pytest.mark.parametrize(
    "likelihood", ["gaussian", pytest.param("continuous-bernoulli", marks=pytest.mark.slow)]
)
def test_a_colour_folder_of_mixed_sizes_trains_with_conv(tmp_path, likelihood):
    write_faces(tmp_path / "faces")
    out = tmp_path / "run"
    # 8x8, the smallest the conv network takes: the test is about plumbing, not quality.
    args = ["train", "--dataset", str(tmp_path / "faces"), "--image-size", "8"]
    args += ["--channels", "3", "--network", "conv", "--likelihood", likelihood, *TINY]
    result = CliRunner().invoke(main, [*args, "--no-progress", "--out", str(out)])
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["data"]["image_size"] == 8 and config["data"]["channels"] == 3
    assert config["model"]["data_shape"] == [3, 8, 8]
    for name in ("samples.png", "reconstructions.png"):
        with Image.open(out / name) as grid:
            assert grid.mode == "RGB"
            pixels = np.asarray(grid, dtype=np.int64)
        # Colour, not grey drawn as RGB: some pixel's channels differ.
        assert (pixels.max(axis=2) != pixels.min(axis=2)).any(), name


def test_mixed_sizes_without_image_size_is_one_line(tmp_path):
    write_faces(tmp_path / "faces", n=3)
    args = ["train", "--dataset", str(tmp_path / "faces"), *TINY, "--out", str(tmp_path / "r")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "pass --image-size N" in lines[0], result.output


def test_channels_takes_1_or_3_only(tmp_path):
    result = CliRunner().invoke(main, ["train", "--channels", "2"])
    assert result.exit_code == 2 and "--channels" in result.output
