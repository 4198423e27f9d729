"""``pyrovae evaluate`` and ``pyrovae diagnose``: how good is a trained run, and can its
q(z|x) be trusted."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from pyrovae.cli._common import (
    checkpoint_option,
    device_option,
    run_option,
    seed_option,
    threads_option,
    user_errors,
    verbosity_options,
    weights_option,
)

if TYPE_CHECKING:
    from pyrovae.api import CheckpointName, WeightsName

_split_option = click.option(
    "--split", type=click.Choice(["test", "train"]), default="test", show_default=True
)


_progress_option = click.option(
    "--progress/--no-progress",
    default=True,
    show_default=True,
    help="Progress bars on stderr for the steps that take long (only on a terminal).",
)


@click.command("evaluate")
@run_option
@_split_option
@click.option(
    "--metrics",
    default="logpx,elbo,active,surgery",
    show_default=True,
    help="What to compute, comma-separated: logpx (importance-sampled log p(x), the ELBO "
    "from the same draws, bits/dim), elbo (ELBO, reconstruction and KL), active (active "
    "units), surgery (ELBO surgery: marginal KL and I(x;z)), gaps (inference gaps: "
    "per-image optimized q*, slow).",
)
@click.option(
    "-k",
    "k",
    type=click.IntRange(min=1),
    default=None,
    help="Importance samples per image for log p(x) (5000 for figures to publish) "
    "[default: 500, fewer (at least 10, with a warning) for a model whose density is "
    "costly, such as a VampPrior with a flow guide, so that it finishes in about a minute].",
)
@click.option(
    "-n",
    "n",
    type=click.IntRange(min=2),
    default=1000,
    show_default=True,
    help="Evaluate the first N images of the split (more than it holds: all of them).",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write every figure to this JSON file.",
)
@click.option(
    "--gaps",
    type=click.IntRange(min=0),
    default=0,
    help="Inference gaps on the first N images (adds gaps to --metrics; with gaps in "
    "--metrics and no --gaps, or --gaps 0: 8 images).",
)
@click.option(
    "--memory-budget",
    default="auto",
    show_default=True,
    help="Memory the importance-sampling draws of one batch of images may take, e.g. "
    "64M or 2G; auto: a quarter of the device's free memory, at most 64 MiB on the CPU "
    "(chunks that stay near the processor's cache run fastest). The draws come in "
    "chunks of that size, so memory does not grow with -k.",
)
@checkpoint_option
@weights_option
@_progress_option
@seed_option
@device_option
@threads_option
@verbosity_options
@user_errors
def evaluate_command(
    run_dir: str | None,
    split: str,
    metrics: str,
    k: int | None,
    n: int,
    json_path: str | None,
    gaps: int,
    memory_budget: str,
    checkpoint: CheckpointName,
    weights: WeightsName,
    progress: bool,
    seed: int | None,
    device: str,
) -> None:
    """Importance-sampled log p(x), ELBO terms, bits/dim, active units, ELBO surgery, gaps.

    Every Monte Carlo figure comes with two standard errors: over images (how far
    another sample of N images could move it) and Monte Carlo (how far another
    evaluation of the same images could). Bits per dimension are a code length:
    for a Bernoulli likelihood -log2 p(x) / D; for continuous likelihoods
    (gaussian, continuous-bernoulli) on 8-bit images, the density at uniformly
    dequantized pixels (x + u) / 256 plus D log 256 nats; on other data they are
    withheld, with the reason.
    """
    from pyrovae.api import evaluate_run

    result = evaluate_run(
        run_dir,
        split=split,
        k=k,
        n=n,
        metrics=metrics,
        gaps=gaps,
        device=device,
        seed=0 if seed is None else seed,
        json_path=json_path,
        memory_budget=memory_budget,
        checkpoint=checkpoint,
        weights=weights,
        progress=progress,
    )
    click.echo(result.format_table())
    if json_path:
        click.echo(f"wrote {json_path}")


@click.command("diagnose")
@run_option
@_split_option
@click.option(
    "-n",
    "n",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Images diagnosed with PSIS.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Output folder [default: RUN/diagnostics].",
)
@click.option(
    "--draws",
    type=click.IntRange(min=100),  # pyrovae.inference.psis.MIN_PSIS_DRAWS
    default=1000,
    show_default=True,
    help="Draws of q(z|x) per image for PSIS (at least 100: fewer leave k-hat undefined or noise).",
)
@click.option(
    "--nuts",
    type=click.IntRange(min=0),
    default=4,
    show_default=True,
    help="Images with a NUTS reference posterior (0: none).",
)
@click.option(
    "--nuts-draws",
    type=click.IntRange(min=10),
    default=100,
    show_default=True,
    help="NUTS draws (and warm-up steps) per chain.",
)
@click.option(
    "--chains",
    type=click.IntRange(min=2),
    default=4,
    show_default=True,
    help="NUTS chains (several, so that R-hat and ESS are defined).",
)
@click.option(
    "--full-netcdf",
    is_flag=True,
    help="Keep every draw and point of q(z|x), NUTS and the replications in "
    "diagnostics.nc, in float64 (default: a compact float32 subset, a few MB).",
)
@click.option(
    "--progress/--no-progress",
    default=True,
    show_default=True,
    help="A line on stderr as each step starts (PSIS, NUTS, figures), and progress bars "
    "inside the steps on a terminal.",
)
@checkpoint_option
@weights_option
@seed_option
@device_option
@threads_option
@verbosity_options
@user_errors
def diagnose_command(
    run_dir: str | None,
    split: str,
    n: int,
    out: str | None,
    draws: int,
    nuts: int,
    nuts_draws: int,
    chains: int,
    full_netcdf: bool,
    progress: bool,
    checkpoint: CheckpointName,
    weights: WeightsName,
    seed: int | None,
    device: str,
) -> None:
    """PSIS k̂, NUTS reference, PPC and latent space: HTML, netCDF and JSON reports.

    The HTML page opens with a one-sentence verdict (can q(z|x) be trusted for
    this run?); diagnostics.nc is an ArviZ InferenceData that az.loo, az.waic,
    az.compare, az.summary, az.plot_trace and az.plot_ppc take as it is.
    """
    from pyrovae.api import diagnose_report

    result = diagnose_report(
        run_dir,
        out=out,
        split=split,
        n=n,
        draws=draws,
        nuts=nuts,
        nuts_draws=nuts_draws,
        chains=chains,
        full_netcdf=full_netcdf,
        checkpoint=checkpoint,
        weights=weights,
        device=device,
        seed=0 if seed is None else seed,
        progress=progress,
    )
    click.echo(result.format_summary())
