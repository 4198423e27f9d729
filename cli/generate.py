"""``pyrovae sample`` and ``pyrovae reconstruct``: images from a trained run."""

from __future__ import annotations

import click

from pyrovae.cli._common import device_option, image_path, run_option, seed_option, user_errors

_mode_option = click.option(
    "--mode",
    type=click.Choice(["mean", "draw"]),
    default="mean",
    show_default=True,
    help="Show the likelihood's mean E[x|z], or a draw x ~ p(x|z).",
)


@click.command("sample")
@click.option(
    "-n", "n", type=click.IntRange(min=1), default=64, show_default=True, help="Number of images."
)
@run_option
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Image file [default: RUN/samples.png].",
)
@click.option(
    "--temperature",
    type=float,
    default=1.0,
    show_default=True,
    help="Scale of the prior's spread; below 1 gives more typical images.",
)
@seed_option
@click.option(
    "--save-array",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also save the images as an (n, C, H, W) .npy array.",
)
@_mode_option
@device_option
@user_errors
def sample_command(
    n: int,
    run_dir: str | None,
    out: str | None,
    temperature: float,
    seed: int | None,
    save_array: str | None,
    mode: str,
    device: str,
) -> None:
    """Draw z ~ p(z), decode, and write an image grid."""
    from pathlib import Path

    import numpy as np

    from pyrovae.api import load_run, sample
    from pyrovae.plots import save_grid

    if out is not None:
        image_path(out)
    run = load_run(run_dir, device=device)
    images = sample(run, n, temperature=temperature, mean=mode == "mean", seed=seed)
    path = save_grid(images, out or Path(run.run_dir) / "samples.png")
    click.echo(f"wrote {n} samples to {path}")
    if save_array:
        Path(save_array).parent.mkdir(parents=True, exist_ok=True)
        np.save(save_array, images.numpy())
        click.echo(f"wrote array {tuple(images.shape)} to {save_array}")


@click.command("reconstruct")
@click.option(
    "-n", "n", type=click.IntRange(min=1), default=16, show_default=True, help="Number of images."
)
@run_option
@click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True)
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Image file [default: RUN/reconstructions.png].",
)
@seed_option
@_mode_option
@device_option
@user_errors
def reconstruct_command(
    n: int,
    run_dir: str | None,
    split: str,
    out: str | None,
    seed: int | None,
    mode: str,
    device: str,
) -> None:
    """Show images beside their reconstructions through z ~ q(z|x)."""
    from pathlib import Path

    from pyrovae.api import load_run, reconstruct
    from pyrovae.plots import save_reconstructions

    if out is not None:
        image_path(out)
    run = load_run(run_dir, device=device)
    originals, reconstructions = reconstruct(run, n, split=split, mean=mode == "mean", seed=seed)
    path = save_reconstructions(
        originals, reconstructions, out or Path(run.run_dir) / "reconstructions.png"
    )
    click.echo(f"wrote {n} {split} images and their reconstructions to {path}")
