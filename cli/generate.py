"""``pyrovae sample`` and ``pyrovae reconstruct``: images from a trained run.

Output paths are checked before the run is loaded and anything is drawn; the
files are written through :mod:`pyrovae.files` at exactly the paths printed,
and "wrote" is printed only once every file is written.
"""

from __future__ import annotations

from pathlib import Path

import click

from pyrovae.cli._common import (
    device_option,
    image_path,
    progress_option,
    run_option,
    seed_option,
    threads_option,
    user_errors,
)

#: The most images one ``pyrovae sample`` draws (the array of 100000 MNIST
#: images is 314 MB of float32).
MAX_SAMPLES = 100_000

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
) -> None:
    """Draw z ~ p(z), decode, and write an image grid."""
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
    run = load_run(run_dir, device=device)
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
        progress=progress,
        label=label,
    )
    save_grid(images[:shown], out)
    if save_array:
        array = images.numpy()
        # Through a handle, np.save writes exactly the path given (no ".npy" added).
        atomic_write(save_array, lambda handle: np.save(handle, array, allow_pickle=False))
    # Printed only now that every file is written.
    click.echo(_grid_line(n, shown, out, kept_all=save_array is not None))
    if save_array:
        click.echo(f"wrote array {tuple(images.shape)} to {save_array}")


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
@seed_option
@_mode_option
@device_option
@threads_option
@progress_option
@user_errors
def reconstruct_command(
    n: int,
    run_dir: str | None,
    split: str,
    out: str | None,
    seed: int | None,
    mode: str,
    device: str,
    progress: bool,
) -> None:
    """Show images beside their reconstructions through z ~ q(z|x)."""
    from pyrovae.api import load_run, reconstruct
    from pyrovae.reports.figures import MAX_GRID_TILES, save_reconstructions

    if out is not None:
        image_path(out)
    run = load_run(run_dir, device=device)
    out = out or str(Path(run.run_dir) / "reconstructions.png")
    image_path(out)
    most = MAX_GRID_TILES // 2  # each image takes two tiles
    originals, reconstructions = reconstruct(
        run, min(n, most), split=split, mean=mode == "mean", seed=seed, progress=progress
    )
    save_reconstructions(originals, reconstructions, out)
    shown = originals.shape[0]
    note = ""
    if shown < n:
        reason = (
            f"the {split} split holds {shown}"
            if shown < min(n, most)
            else f"a grid shows at most {most}"
        )
        note = f" ({n} asked; {reason})"
    click.echo(f"wrote {shown} {split} images and their reconstructions to {out}{note}")
