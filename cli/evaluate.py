"""``pyrovae evaluate`` and ``pyrovae diagnose``: how good is a trained run, and can its
q(z|x) be trusted."""

from __future__ import annotations

import click

from pyrovae.cli._common import device_option, run_option, seed_option, user_errors

_split_option = click.option(
    "--split", type=click.Choice(["test", "train"]), default="test", show_default=True
)


@click.command("evaluate")
@run_option
@_split_option
@click.option(
    "-k",
    "k",
    type=click.IntRange(min=1),
    default=5000,
    show_default=True,
    help="Importance samples per image for log p(x).",
)
@click.option(
    "-n",
    "n",
    type=click.IntRange(min=2),
    default=None,
    help="Evaluate only the first N images [default: all].",
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
    show_default=True,
    help="Amortization and approximation gaps on the first N images (per-point optimized q*).",
)
@seed_option
@device_option
@user_errors
def evaluate_command(
    run_dir: str | None,
    split: str,
    k: int,
    n: int | None,
    json_path: str | None,
    gaps: int,
    seed: int | None,
    device: str,
) -> None:
    """Importance-sampled log p(x), ELBO terms, bits/dim, active units, ELBO surgery."""
    from pyrovae.evaluation import evaluate_run

    result = evaluate_run(
        run_dir,
        split=split,
        k=k,
        n=n,
        gaps=gaps,
        device=device,
        seed=0 if seed is None else seed,
        json_path=json_path,
        progress=True,
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
    type=click.IntRange(min=10),
    default=1000,
    show_default=True,
    help="Draws of q(z|x) per image for PSIS.",
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
    default=200,
    show_default=True,
    help="NUTS draws (and warm-up steps) per chain.",
)
@click.option(
    "--chains", type=click.IntRange(min=2), default=4, show_default=True, help="NUTS chains."
)
@seed_option
@device_option
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
    seed: int | None,
    device: str,
) -> None:
    """PSIS k̂, NUTS reference, PPC and latent space: HTML, netCDF and JSON reports."""
    from pyrovae.diagnostics import diagnose_run

    result = diagnose_run(
        run_dir,
        out=out,
        split=split,
        n=n,
        draws=draws,
        nuts=nuts,
        nuts_draws=nuts_draws,
        chains=chains,
        device=device,
        seed=0 if seed is None else seed,
    )
    click.echo(result.format_summary())
