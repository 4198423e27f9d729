"""``pyrovae train``: options -> :class:`~pyrovae.config.RunConfig` -> :func:`pyrovae.train`."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from pyrovae.cli._common import threads_option, user_errors
from pyrovae.cli.options import ComponentCommand, component_values, kind_option
from pyrovae.config import (
    BINARIZE,
    DEVICES,
    ELBOS,
    MODEL_KINDS,
    OBJECTIVES,
    STREAMS,
    DataConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
)

#: Options that may be given with --resume; the rest come from the run's config.json.
RESUME_OPTIONS = {"resume", "epochs", "device", "lr", "progress", "devices"}


@click.command("train", cls=ComponentCommand)
@click.option(
    "--dataset",
    default=DataConfig.dataset,
    show_default=True,
    help="digits, mnist, fashion-mnist, a .npy/.npz file or a folder of images.",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder with the IDX files of MNIST / Fashion-MNIST.",
)
@click.option(
    "--binarize",
    type=click.Choice(BINARIZE),
    default=DataConfig.binarize,
    show_default=True,
    help="How binary likelihoods binarize pixels.",
)
@click.option(
    "--val-fraction",
    type=float,
    default=DataConfig.val_fraction,
    show_default=True,
    help="Share of a .npy/.npz file or image folder held out for test (with --seed), "
    "where it brings no test split of its own.",
)
@click.option(
    "--stream",
    type=click.Choice(STREAMS),
    default=DataConfig.stream,
    show_default=True,
    help="Read the training images of a .npy file or an image folder from disk a batch at "
    "a time (yes), whole (no), or stream when they would take over a quarter of the "
    "memory available (auto).",
)
@click.option(
    "--model",
    "kind",
    type=click.Choice(MODEL_KINDS),
    default=ModelConfig.kind,
    show_default=True,
    help="What is trained from the components below.",
)
@kind_option("network", ModelConfig.network, "Encoder and decoder networks.")
@kind_option("likelihood", ModelConfig.likelihood, "p(x|z).")
@click.option(
    "--latent-dim",
    type=int,
    default=ModelConfig.latent_dim,
    show_default=True,
    help="Size of z.",
)
@kind_option("guide", ModelConfig.guide, "q(z|x).")
@kind_option("prior", ModelConfig.prior, "p(z).")
@click.option(
    "--objective",
    type=click.Choice(OBJECTIVES),
    default=TrainConfig.objective,
    show_default=True,
    help="elbo, or iwae: the importance-weighted bound with --particles samples.",
)
@click.option(
    "--pyro-step",
    is_flag=True,
    default=False,
    help="Run every step through Pyro's differentiable_loss on traces (slower; the default "
    "evaluates the same estimator directly, checked against Pyro's on the first batch).",
)
@click.option(
    "--elbo",
    type=click.Choice(ELBOS),
    default=TrainConfig.elbo,
    show_default=True,
    help="meanfield: TraceMeanField_ELBO (analytic KL); trace: Trace_ELBO.",
)
@click.option(
    "--particles",
    type=int,
    default=TrainConfig.particles,
    show_default=True,
    help="Samples of z per data point, vectorized.",
)
@click.option(
    "--beta",
    type=float,
    default=TrainConfig.beta,
    show_default=True,
    help="Weight on the KL term (beta-VAE).",
)
@click.option(
    "--kl-warmup",
    type=int,
    default=TrainConfig.kl_warmup,
    show_default=True,
    help="Epochs over which beta rises linearly from 0.",
)
@click.option(
    "--labeled",
    type=int,
    default=None,
    help="--model m2: keep N class-balanced training labels of the data set (seeded), "
    "the rest unlabelled. Default: the data's own labels (-1 marks an unlabelled point).",
)
@click.option(
    "--aux-weight",
    type=float,
    default=None,
    help="--model m2: weight alpha of the classification loss -log q(y|x) per labelled "
    "point. Default: Pyro's ss_vae_M2 example's 46, scaled by the number of training "
    "points over its 50,000.",
)
@click.option(
    "--lr",
    type=float,
    default=TrainConfig.lr,
    show_default=True,
    help="Adam step size (with --resume: the new step size from here on).",
)
@click.option("--batch-size", type=int, default=TrainConfig.batch_size, show_default=True)
@click.option(
    "--epochs",
    type=int,
    default=None,
    help=f"Epochs in all [default: {TrainConfig.epochs}; with --resume, the run's].",
)
@click.option("--seed", type=int, default=TrainConfig.seed, show_default=True)
@click.option(
    "--device",
    type=click.Choice(DEVICES),
    default=None,
    help="auto takes CUDA when present [default: auto; with --resume, the run's].",
)
@click.option(
    "--out",
    type=click.Path(),
    default=None,
    help="Run directory [default: a new folder under runs/].",
)
@click.option(
    "--resume",
    type=click.Path(),
    default=None,
    help="Continue the run in this directory from its last checkpoint (or draw the figures "
    "of a run stopped before them).",
)
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
@threads_option
@click.option(
    "--devices",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Train data-parallel in this many processes on this machine (one per GPU, or gloo "
    "on CPU) through torchrun; for several machines run torchrun yourself.",
)
@click.pass_context
@user_errors
def train_command(ctx: click.Context, **options: Any) -> None:
    """Train a VAE with Pyro SVI and write a run directory.

    The options after --prior are those of the installed components (plugins
    included): each goes to the chosen components that declare it.
    """
    from pyrovae.api import train
    from pyrovae.model.build import check_model_config

    component_given = component_values(options)
    progress = options.pop("progress")
    devices = options.pop("devices")
    # Launch only once the options are known to be good: a bad one is then one
    # message, not one per process.
    launching = devices > 1 and "WORLD_SIZE" not in os.environ
    if options["resume"] is not None:
        _resume(ctx, options, component_given, progress=progress, devices=devices,
                launching=launching)  # fmt: skip
        return
    config = _run_config(options, component_given)
    if launching:
        check_model_config(config.validate().model)
        _launch(ctx, devices)
    with _interruptible():
        train(config, options["out"], progress=progress)


def _resume(
    ctx: click.Context,
    options: dict[str, Any],
    component_given: dict[str, Any],
    *,
    progress: bool,
    devices: int,
    launching: bool,
) -> None:
    """``--resume RUN``: only the options that may change on a resumed run are taken."""
    from pyrovae.api import resume
    from pyrovae.model.build import check_model_config

    given = {
        name
        for name in [*options, *component_given]
        if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE
    }
    extra = sorted(given - RESUME_OPTIONS)
    if extra:
        flags = ", ".join("--" + name.replace("_", "-") for name in extra)
        raise click.UsageError(
            "with --resume only --epochs, --device, --lr, --threads and --devices may be "
            f"given, not {flags}"
        )
    lr = options["lr"] if "lr" in given else None
    if launching:
        config = RunConfig.load(Path(options["resume"]) / "config.json")
        if lr is not None:
            config.train.lr = lr
        check_model_config(config.validate().model)
        _launch(ctx, devices)
    with _interruptible():
        resume(
            options["resume"],
            epochs=options["epochs"],
            device=options["device"],
            lr=lr,
            progress=progress,
        )


def _run_config(options: dict[str, Any], component_given: dict[str, Any]) -> RunConfig:
    """The run config the options of a new run say."""
    from pyrovae.model.spec import model_config

    def pick(*names: str) -> dict[str, Any]:
        return {name: options[name] for name in names}

    data = DataConfig(**pick("dataset", "data_dir", "binarize", "val_fraction", "stream"))
    model = model_config(
        **pick("kind", "network", "likelihood", "guide", "prior", "latent_dim"),
        **component_given,
    )
    train = TrainConfig(
        **pick("objective", "pyro_step", "elbo", "particles", "beta", "kl_warmup", "lr"),
        **pick("batch_size", "seed"),
        epochs=TrainConfig.epochs if options["epochs"] is None else options["epochs"],
        device=options["device"] or TrainConfig.device,
    )
    data.labeled, train.aux_weight = options["labeled"], options["aux_weight"]  # m2
    return RunConfig(data=data, model=model, train=train)


def _launch(ctx: click.Context, devices: int) -> None:
    """Run this command again in ``devices`` processes under torchrun, and exit with it."""
    from pyrovae.training.distributed import launch

    threads = ctx.meta.get("pyrovae.threads")
    ctx.exit(launch(devices, _without_devices(sys.argv[1:]), threads=threads))


@contextmanager
def _interruptible() -> Iterator[None]:
    """Ctrl-C: a one-line message saying what is kept and how to go on, not a traceback."""
    from pyrovae.training.run import TrainingInterrupted

    try:
        yield
    except TrainingInterrupted as err:
        raise click.ClickException(str(err)) from None
    except KeyboardInterrupt:
        raise click.ClickException(
            "interrupted before training started; nothing was written: run the command again"
        ) from None


def _without_devices(argv: list[str]) -> list[str]:
    """The command line minus ``--devices N``: what each launched process runs."""
    if "train" not in argv:
        raise click.UsageError("--devices works from the command line: pyrovae train --devices N")
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--devices":
            skip = True
        elif not arg.startswith("--devices="):
            out.append(arg)
    return out
