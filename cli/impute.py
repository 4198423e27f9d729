"""``pyrovae impute``: fill in the missing values (NaN) of an array with a trained run."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import click

from pyrovae.cli._common import (
    checkpoint_option,
    device_option,
    progress_option,
    quiet,
    run_option,
    seed_option,
    threads_option,
    user_errors,
    verbosity_options,
    weights_option,
)

if TYPE_CHECKING:
    from pyrovae.api import CheckpointName, WeightsName

_log = logging.getLogger("pyrovae")


@click.command("impute")
@run_option
@click.option(
    "--input",
    "input_path",
    type=click.Path(dir_okay=False, exists=True),
    required=True,
    help="A .npy/.npz array of points of the run's shape, NaN where a value is missing.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    required=True,
    help="Where to write: X.npy gets the input with each NaN replaced by its posterior-"
    "predictive mean (with --draws also X-draws.npz); X.npz gets the arrays mean, std, "
    "lower, upper (90% interval), and draws with --draws.",
)
@click.option(
    "--draws",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Multiple imputations to write (draws of the missing values given the observed ones).",
)
@click.option(
    "--refine",
    type=click.Choice(["none", "sir"]),
    default="none",
    show_default=True,
    help="none: z from the guide q(z|x_obs); sir: importance weights p(x_obs,z)/q(z|x_obs) "
    "for the mean and std, and sampling importance resampling for the draws.",
)
@click.option(
    "--particles",
    type=click.IntRange(min=2),
    default=100,
    show_default=True,
    help="Draws of z per point (the 90% interval is read from as many draws of x).",
)
@click.option(
    "--truth",
    "truth_path",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="The complete data: report the RMSE over missing values and the interval coverage.",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write the figures (with --truth: RMSE and coverage with standard errors) here.",
)
@seed_option
@device_option
@threads_option
@progress_option
@checkpoint_option
@weights_option
@verbosity_options
@user_errors
def impute_command(
    run_dir: str | None,
    input_path: str,
    out: str,
    draws: int,
    refine: str,
    particles: int,
    truth_path: str | None,
    json_path: str | None,
    seed: int | None,
    device: str,
    progress: bool,
    checkpoint: CheckpointName,
    weights: WeightsName,
) -> None:
    """Replace each NaN of --input by its posterior-predictive mean under the run's VAE.

    Each value gets a posterior-predictive standard deviation and a 90% interval; --truth
    scores the imputation (RMSE over missing values, share of true values inside the
    intervals), each figure with its standard error over points.
    """
    from pyrovae.api.impute import impute_file

    result, written = impute_file(
        input_path,
        out,
        run_dir=run_dir,
        checkpoint=checkpoint,
        weights=weights,
        truth_path=truth_path,
        json_path=json_path,
        draws=draws,
        refine=refine,
        particles=particles,
        seed=0 if seed is None else seed,
        device=device,
        progress=progress and not quiet(),
    )
    _log.info(result.format_summary())
    _log.info("wrote " + ", ".join(str(path) for path in written))
