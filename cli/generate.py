"""``pyrovae sample`` and ``pyrovae reconstruct``: images from a trained run.

Output paths are checked before the run is loaded and anything is drawn; the
files are written through :mod:`pyrovae.files` at exactly the paths printed,
and "wrote" is printed only once every file is written.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pyrovae.cli._common import (
    checkpoint_option,
    device_option,
    image_path,
    progress_option,
    quiet,
    run_option,
    seed_option,
    threads_option,
    user_errors,
    verbosity_options,
    weights_option,
)
from pyrovae.config import MAX_SAMPLES

if TYPE_CHECKING:
    from pyrovae.api import CheckpointName, WeightsName

_log = logging.getLogger("pyrovae")


_mode_option = click.option(
    "--mode",
    type=click.Choice(["mean", "draw"]),
    default="mean",
    show_default=True,
    help="Show the likelihood's mean E[x|z], or a draw x ~ p(x|z).",
)


@click.command("sample")
@click.option(
    "-n",
    "n",
    type=click.IntRange(1, MAX_SAMPLES),
    default=64,
    show_default=True,
    help="Number of images (a grid shows at most 4096; --save-array keeps all).",
)
@run_option
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Image file, .png or .jpg [default: RUN/samples.png].",
)
@click.option(
    "--temperature",
    type=float,
    default=1.0,
    show_default=True,
    help="Scale of the prior's spread, from 1e-6 to 100; below 1 gives more typical images.",
)
@seed_option
@click.option(
    "--save-array",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also save the images as an (n, C, H, W) float32 .npy array, at exactly this path.",
)
@_mode_option
@click.option(
    "--label",
    type=int,
    default=None,
    help="Draw this class (runs of --model cvae or m2) [default: cvae the classes in turn, "
    "m2 y ~ p(y)].",
)
@device_option
@threads_option
@progress_option
@checkpoint_option
@weights_option
@verbosity_options
@user_errors
def sample_command(
    n: int,
    run_dir: str | None,
    out: str | None,
    temperature: float,
    seed: int | None,
    save_array: str | None,
    mode: str,
    label: int | None,
    device: str,
    progress: bool,
    checkpoint: CheckpointName,
    weights: WeightsName,
) -> None:
    """Draw z ~ p(z), decode, and write an image grid (from the run's best checkpoint
    by default: see --checkpoint)."""
    import numpy as np

    from pyrovae.api import check_temperature, load_run, sample
    from pyrovae.api.classify import check_label
    from pyrovae.errors import ConfigError
    from pyrovae.files import atomic_write, check_output_file
    from pyrovae.reports.figures import MAX_GRID_TILES, save_grid

    check_temperature(temperature)
    if out is not None:
        image_path(out)
    array_target = None if save_array is None else check_output_file(save_array)
    run = load_run(run_dir, device=device, checkpoint=checkpoint, weights=weights)
    check_label(run.config, label)
    out = out or str(Path(run.run_dir) / "samples.png")
    if array_target is not None and image_path(out).resolve() == array_target.resolve():
        raise ConfigError("--save-array names the image grid's file; give another path")
    shown = min(n, MAX_GRID_TILES)
    images = sample(
        run,
        n if save_array else shown,
        temperature=temperature,
        mean=mode == "mean",
        seed=seed,
        progress=progress and not quiet(),
        label=label,
    )
    save_grid(images[:shown], out, value_range=run.config.data.display_range)
    if save_array:
        array = images.numpy()
        # Through a handle, np.save writes exactly the path given (no ".npy" added).
        atomic_write(save_array, lambda handle: np.save(handle, array, allow_pickle=False))
    # Printed only now that every file is written.
    _log.info(_grid_line(n, shown, out, kept_all=save_array is not None))
    if save_array:
        _log.info(f"wrote array {tuple(images.shape)} to {save_array}")


def _grid_line(n: int, shown: int, out: str, kept_all: bool) -> str:
    if shown == n:
        return f"wrote {n} samples to {out}"
    if kept_all:
        return f"wrote the first {shown} of {n} samples to {out} (a grid shows at most {shown})"
    return (
        f"wrote {shown} samples to {out} (a grid shows at most {shown}; "
        f"pass --save-array FILE to keep all {n})"
    )


@click.command("reconstruct")
@click.option(
    "-n",
    "n",
    type=click.IntRange(min=1),
    default=16,
    show_default=True,
    help="Number of images (at most the split's, and 2048).",
)
@run_option
@click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True)
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Image file, .png or .jpg [default: RUN/reconstructions.png].",
)
@click.option(
    "--corrupt",
    metavar="SPEC",
    default=None,
    help="Reconstruct corrupted copies (mask:P, gaussian:SIGMA or salt-pepper:P, as train "
    "--corrupt takes them): rows of clean, corrupted and reconstructed images, labelled.",
)
@seed_option
@_mode_option
@device_option
@threads_option
@progress_option
@checkpoint_option
@weights_option
@verbosity_options
@user_errors
def reconstruct_command(
    n: int,
    run_dir: str | None,
    split: str,
    out: str | None,
    corrupt: str | None,
    seed: int | None,
    mode: str,
    device: str,
    progress: bool,
    checkpoint: CheckpointName,
    weights: WeightsName,
) -> None:
    """Show images beside their reconstructions through z ~ q(z|x) (from the run's best
    checkpoint by default: see --checkpoint; with --corrupt: clean, corrupted and
    reconstructed rows)."""
    from pyrovae.api import load_run, reconstruct
    from pyrovae.model.corruption import parse_corruption
    from pyrovae.reports.figures import MAX_GRID_TILES, save_reconstructions

    if out is not None:
        image_path(out)
    parse_corruption(corrupt)  # a bad spec is one line before the run is loaded
    run = load_run(run_dir, device=device, checkpoint=checkpoint, weights=weights)
    out = out or str(Path(run.run_dir) / "reconstructions.png")
    image_path(out)
    if corrupt:
        _reconstruct_corrupted(run, n, split, out, corrupt, seed, mode == "mean")
        return
    most = MAX_GRID_TILES // 2  # each image takes two tiles
    originals, reconstructions = reconstruct(
        run, min(n, most), split=split, mean=mode == "mean", seed=seed,
        progress=progress and not quiet(),
    )  # fmt: skip
    save_reconstructions(originals, reconstructions, out, value_range=run.config.data.display_range)
    shown = originals.shape[0]
    note = ""
    if shown < n:
        reason = (
            f"the {split} split holds {shown}"
            if shown < min(n, most)
            else f"a grid shows at most {most}"
        )
        note = f" ({n} asked; {reason})"
    _log.info(f"wrote {shown} {split} images and their reconstructions to {out}{note}")


def _reconstruct_corrupted(
    run: Any, n: int, split: str, out: str, corrupt: str, seed: int | None, mean: bool
) -> None:
    """``reconstruct --corrupt``: the clean, corrupted and reconstructed rows, labelled."""
    from pyrovae.api import reconstruct_corrupted
    from pyrovae.reports.figures import MAX_GRID_TILES, save_labelled_rows

    most = MAX_GRID_TILES // 3  # each image takes three tiles
    result = reconstruct_corrupted(
        run, min(n, most), corrupt=corrupt, split=split, mean=mean, seed=seed
    )
    save_labelled_rows(result.rows, out, value_range=run.config.data.display_range)
    shown = result.clean.shape[0]
    note = f" ({n} asked; {'the split holds' if shown < min(n, most) else 'at most'} {shown})"
    _log.info(
        f"wrote {shown} {split} images, corrupted ({result.spec}) and reconstructed, to {out}"
        + (note if shown < n else "")
    )
