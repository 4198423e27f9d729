"""``pyrovae classify``: the classes of points under a semi-supervised (``--model m2``) run."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import click

from pyrovae.cli._common import (
    checkpoint_option,
    device_option,
    run_option,
    threads_option,
    user_errors,
    verbosity_options,
    weights_option,
)

if TYPE_CHECKING:
    from pyrovae.api import CheckpointName, WeightsName

_log = logging.getLogger("pyrovae")


@click.command("classify")
@run_option
@click.option(
    "--input",
    "input_path",
    type=click.Path(dir_okay=False),
    required=True,
    help="A .npy array of points of the run's shape, (N, C, H, W) or (N, H, W) for one "
    "channel: uint8 pixels 0..255 or floats.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    required=True,
    help=".npy file for the (N,) int64 classes, at exactly this path.",
)
@click.option(
    "--probabilities",
    is_flag=True,
    default=False,
    help="Write the class probabilities q(y|x), (N, n_classes) float32, instead.",
)
@checkpoint_option
@weights_option
@device_option
@threads_option
@verbosity_options
@user_errors
def classify_command(
    run_dir: str | None,
    input_path: str,
    out: str,
    probabilities: bool,
    checkpoint: CheckpointName,
    weights: WeightsName,
    device: str,
) -> None:
    """Classify points with an m2 run's q(y|x) and write the classes as .npy."""
    from pyrovae.api import load_run
    from pyrovae.api.classify import classify, read_points, write_classes
    from pyrovae.files import check_distinct_files, check_output_file

    check_output_file(out, suffixes=(".npy",))  # before the run is loaded
    check_distinct_files({"--out": out}, {"--input": input_path})
    run = load_run(run_dir, device=device, checkpoint=checkpoint, weights=weights)
    result = classify(run, read_points(input_path), probabilities=probabilities)
    write_classes(out, result)
    what = "class probabilities" if probabilities else "classes"
    _log.info(f"wrote {what} {tuple(result.shape)} of {result.shape[0]} points to {out}")
