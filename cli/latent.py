"""``pyrovae encode``, ``pyrovae probe`` and ``pyrovae explore``: the latent space of a
trained run as features, as a linear probe, and as figures."""

from __future__ import annotations

import logging
from pathlib import Path
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

_draws_option = click.option(
    "--draws",
    type=click.IntRange(min=2),
    default=1000,
    show_default=True,
    help="Draws of q(z|x) per point where its moments have no closed form (flow guides); "
    "the output then holds their Monte Carlo standard errors.",
)


def _parse_counts(ctx: click.Context, param: click.Parameter, value: str) -> list[int | None]:
    """``"100,1000,all"`` -> ``[100, 1000, None]``."""
    counts: list[int | None] = []
    for part in (p.strip() for p in value.split(",") if p.strip()):
        if part == "all":
            counts.append(None)
        elif part.isdigit() and int(part) >= 2:
            counts.append(int(part))
        else:
            raise click.BadParameter(f"expected counts of 2 or more, or 'all', got {part!r}")
    if not counts:
        raise click.BadParameter("give at least one count, e.g. 100,1000,all")
    return counts


@click.command("encode")
@run_option
@click.option(
    "--input",
    "input_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="A .npy of points (N, *shape) or flat (N, D), or an .npz with 'x' (and labels 'y').",
)
@click.option(
    "--dataset",
    default=None,
    help="Encode a data set instead of --input [default: the run's own].",
)
@click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="The .npz to write.")
@_draws_option
@seed_option
@device_option
@threads_option
@progress_option
@checkpoint_option
@weights_option
@verbosity_options
@user_errors
def encode_command(
    run_dir: str | None,
    input_path: str | None,
    dataset: str | None,
    split: str,
    out: str,
    draws: int,
    seed: int | None,
    device: str,
    progress: bool,
    checkpoint: CheckpointName,
    weights: WeightsName,
) -> None:
    """Write the mean and standard deviation of q(z|x) for each point to an .npz.

    Keys: mean and std (N, latent), labels (N,) when the data have them, and
    method. For a flow guide the moments are Monte Carlo estimates from --draws
    draws per point, with their standard errors under mean_se and std_se.
    """
    from pyrovae.api import encode, load_run
    from pyrovae.errors import ConfigError
    from pyrovae.files import check_distinct_files, check_output_file

    if input_path is not None and dataset is not None:
        raise ConfigError("give --input or --dataset, not both")
    check_output_file(out, suffixes=(".npz",))
    check_distinct_files({"--out": out}, {"--input": input_path, "--dataset": dataset})
    run = load_run(run_dir, device=device, checkpoint=checkpoint, weights=weights)
    result = encode(
        run,
        input_path,
        dataset=dataset,
        split=split,
        draws=draws,
        seed=0 if seed is None else seed,
        progress=progress and not quiet(),
        out=out,
    )
    keys = ", ".join(result.arrays())
    _log.info(f"wrote {out} ({keys}): {result.describe()}")


@click.command("probe")
@run_option
@click.option(
    "--labels",
    "counts",
    default="100,1000,all",
    show_default=True,
    callback=_parse_counts,
    help="Numbers of class-balanced training labels, comma-separated ('all': every one).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder for probe.png [default: RUN/probe].",
)
@click.option(
    "--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Also write JSON."
)
@_draws_option
@seed_option
@device_option
@threads_option
@progress_option
@checkpoint_option
@weights_option
@verbosity_options
@user_errors
def probe_command(
    run_dir: str | None,
    counts: list[int | None],
    out: str | None,
    json_path: str | None,
    draws: int,
    seed: int | None,
    device: str,
    progress: bool,
    checkpoint: CheckpointName,
    weights: WeightsName,
) -> None:
    """Logistic regression on the posterior means, against raw pixels and PCA.

    The encoder and the PCA (as many components as latent dimensions) use the
    whole training split without labels; the classifier is fitted on seeded,
    class-balanced subsets of its labels and scored on the test split.
    """
    from pyrovae.api import load_run, probe

    run = load_run(run_dir, device=device, checkpoint=checkpoint, weights=weights)
    folder = out if out is not None else run.run_dir / "probe"  # an empty --out is refused
    result = probe(
        run,
        counts=counts,
        seed=0 if seed is None else seed,
        draws=draws,
        progress=progress and not quiet(),
        out=folder,
        json_path=json_path,
    )
    click.echo(result.format_table())
    _log.info(f"wrote {Path(folder) / 'probe.png'}" + (f" and {json_path}" if json_path else ""))


@click.command("explore")
@run_option
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder for the figures [default: RUN/latent].",
)
@click.option(
    "--tsne-points",
    type=click.IntRange(min=4),
    default=2000,
    show_default=True,
    help="Test points in the t-SNE map at most (its time grows with them).",
)
@_draws_option
@seed_option
@device_option
@threads_option
@progress_option
@checkpoint_option
@weights_option
@verbosity_options
@user_errors
def explore_command(
    run_dir: str | None,
    out: str | None,
    tsne_points: int,
    draws: int,
    seed: int | None,
    device: str,
    progress: bool,
    checkpoint: CheckpointName,
    weights: WeightsName,
) -> None:
    """Figures of the latent space: interpolations, traversals, manifold, class map.

    interpolation.png (linear, and spherical for a Gaussian prior), traversal.png
    (the most active dimensions first), manifold.png (a grid of prior quantiles
    for a 2-D latent, else along the two leading principal directions of the
    posterior means) and latent_map.png (PCA and t-SNE of the test posterior
    means, coloured by class).
    """
    from pyrovae.api import explore, load_run

    run = load_run(run_dir, device=device, checkpoint=checkpoint, weights=weights)
    result = explore(
        run,
        out,
        tsne_points=tsne_points,
        draws=draws,
        seed=0 if seed is None else seed,
        progress=progress and not quiet(),
        log=lambda line: _log.info(line) if progress else None,
    )
    for note in result.notes:
        _log.info(note)
    ranked = ", ".join(f"z{d + 1} {result.activity[d]:.3g}" for d in result.order[:8])
    _log.info(f"most active dimensions ({result.activity_measure}): {ranked}")
    _log.info("wrote " + ", ".join(str(path) for path in result.paths))
