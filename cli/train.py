"""``pyrovae train``: options -> :class:`~pyrovae.config.RunConfig` -> :func:`pyrovae.train`."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from pyrovae.cli._common import quiet, threads_option, user_errors, verbosity_options
from pyrovae.cli.options import ComponentCommand, component_values, kind_option
from pyrovae.config import (
    BINARIZE,
    DEVICES,
    ELBOS,
    LOGGERS,
    LR_SCHEDULES,
    MODEL_KINDS,
    OBJECTIVES,
    PRECISIONS,
    STREAMS,
    DataConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
)
from pyrovae.errors import ConfigError
from pyrovae.presets import PRESETS, describe_presets, preset_options

_log = logging.getLogger("pyrovae")

#: TrainConfig fields set by the options of the same names (the conveniences block).
CONVENIENCES = (
    "logger", "patience", "lr_schedule", "clip_grad_norm", "max_time", "eval_every", "eval_size",
)  # fmt: skip
#: TrainConfig fields set by the options of the same names (the quality block).
QUALITY = ("free_bits", "ema", "preset")
#: TrainConfig fields set by the options of the same names (the speed block).
SPEED = ("precision", "compile")
#: Train options that a config file cannot set.
NOT_IN_CONFIG_FILE = {"config", "resume", "help", "verbose", "quiet"}


class Duration(click.ParamType):
    """Seconds, or a number with a unit: ``90``, ``90s``, ``10m``, ``1.5h``."""

    name = "DURATION"
    UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            seconds = float(value)
        else:
            text = str(value).strip().lower()
            scale = self.UNITS.get(text[-1:], None) if text else None
            try:
                seconds = float(text[:-1] if scale else text) * (scale or 1.0)
            except ValueError:
                self.fail(f"expected seconds or a duration like 90, 10m, 1.5h; got {value!r}")
        if not seconds >= 0 or seconds == float("inf"):
            self.fail(f"expected a duration of 0 or more, got {value!r}")
        return seconds


#: Options that may be given with --resume; the rest come from the run's config.json.
RESUME_OPTIONS = {"resume", "epochs", "device", "lr", "particles", "progress", "devices",
                  "max_time", "precision", "compile"}  # fmt: skip


@click.command("train", cls=ComponentCommand)
@click.option(
    "--dataset",
    default=DataConfig.dataset,
    show_default=True,
    help="digits, mnist, fashion-mnist, cifar10, a .npy/.npz file or a folder of images.",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder with the IDX files of MNIST / Fashion-MNIST, or holding cifar-10-batches-py/.",
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
    help="Share of the training points held out for validation (with --seed), for any data "
    "set: it picks the best checkpoint and drives --patience. 0: no validation split.",
)
@click.option(
    "--test-fraction",
    type=float,
    default=DataConfig.test_fraction,
    show_default=True,
    help="Share of a .npy/.npz file or image folder held out for test (with --seed), "
    "where it brings no test split of its own (before 0.2 this was --val-fraction).",
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
    "--image-size",
    type=click.IntRange(min=1),
    default=None,
    help="Resize every image so its shorter side is this many pixels and crop the centre to "
    "a square (needed for a folder of images of different sizes) [default: as they are].",
)
@click.option(
    "--channels",
    type=click.Choice(["1", "3"]),
    default=None,
    callback=lambda _ctx, _param, value: None if value is None else int(value),
    help="Convert every image to grayscale (1) or RGB (3) [default: as they are].",
)
@click.option(
    "--model",
    "kind",
    type=click.Choice(MODEL_KINDS),
    default=ModelConfig.kind,
    show_default=True,
    help="What is trained from the components below: a VAE; ae, a deterministic "
    "autoencoder (z = the guide's mean, trained on -log p(x|z); no prior, no sampling); "
    "cvae, a VAE conditioned on the class label; m2, Kingma et al.'s semi-supervised VAE.",
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
    help="Samples of z per data point, vectorized (with --resume: the count from here on, "
    "e.g. IWAE-5 fine-tuned with IWAE-50).",
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
    "--corrupt",
    metavar="SPEC",
    default=None,
    help="Denoising: the encoder reads a freshly corrupted copy of each batch, the "
    "likelihood scores the clean one; mask:P (values set to 0 with probability P), "
    "gaussian:SIGMA (added noise) or salt-pepper:P (values set to the data's least or "
    "greatest, 0 or 1 for data in [0, 1]).",
)
@click.option(
    "--sparsity",
    metavar="RHO",
    type=float,
    default=None,
    help="Sparse encoder: penalize KL(RHO || mean activation) of each hidden unit "
    "(reported as train_sparsity_kl, apart from the ELBO); e.g. 0.05.",
)
@click.option(
    "--sparsity-weight",
    metavar="W",
    type=float,
    default=TrainConfig.sparsity_weight,
    show_default=True,
    help="Weight of the --sparsity penalty per data point.",
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
# Training conveniences: config file, loggers, validation and stopping, overhead.
@click.option(
    "--config",
    type=click.Path(dir_okay=False),
    is_eager=True,
    expose_value=False,
    callback=lambda ctx, param, value: _read_config_file(ctx, value),
    help="A TOML file of train options, keyed by their names (latent_dim = 4, flows = 2); "
    "options on the command line override it. Every run writes its own as RUN/config.toml.",
)
@click.option(
    "--logger",
    type=click.Choice(LOGGERS),
    default=TrainConfig.logger,
    show_default=True,
    help="Also log losses, per-epoch figures, beta, the learning rate and image grids: csv "
    "(RUN/logs) or tensorboard (RUN/tensorboard; pip install 'pyrovae[tensorboard]').",
)
@click.option(
    "--patience",
    type=click.IntRange(min=0),
    default=TrainConfig.patience,
    show_default=True,
    help="Stop when the validation ELBO has not improved in this many evaluations "
    "(needs --val-fraction); 0: never.",
)
@click.option(
    "--lr-schedule",
    type=click.Choice(LR_SCHEDULES),
    default=TrainConfig.lr_schedule,
    show_default=True,
    help="cosine: anneal --lr to 0 over the epochs, or over the --max-time budget if it "
    "ends first; plateau: halve it after 2 evaluations "
    "without a better validation (or training) ELBO.",
)
@click.option(
    "--clip-grad-norm",
    type=click.FloatRange(min=0),
    default=TrainConfig.clip_grad_norm,
    show_default=True,
    help="Clip the gradients' global 2-norm to this; 0: no clipping.",
)
@click.option(
    "--max-time",
    type=Duration(),
    default=TrainConfig.max_time,
    show_default=True,
    help="Wall-clock budget: seconds, or 10m, 1.5h. Stops, checkpointed, before an epoch "
    "that would overrun it (--resume continues); 0: none.",
)
@click.option(
    "--eval-every",
    type=click.IntRange(min=1),
    default=TrainConfig.eval_every,
    show_default=True,
    help="Epochs between evaluations (test and validation ELBO) and checkpoints; the last "
    "epoch is always evaluated.",
)
@click.option(
    "--eval-size",
    type=click.IntRange(min=0),
    default=TrainConfig.eval_size,
    show_default=True,
    help="Score the first N test (and validation) points at each evaluation; 0: all.",
)
# Quality: free bits, a moving average of the weights, named configurations.
@click.option(
    "--free-bits",
    metavar="LAMBDA",
    type=click.FloatRange(min=0),
    default=TrainConfig.free_bits,
    show_default=True,
    help="Free bits (Kingma et al. 2016): train on sum_j max(LAMBDA, KL_j), the KL of each "
    "latent dimension averaged over the batch, in nats; the reported ELBO stays the true "
    "one. Needs a per-dimension analytic KL (--guide normal --prior normal, --elbo "
    "meanfield). 0: off.",
)
@click.option(
    "--ema",
    metavar="DECAY",
    type=click.FloatRange(min=0, max=1, max_open=True),
    default=TrainConfig.ema,
    show_default=True,
    help="Keep an exponential moving average of the weights with this decay (e.g. 0.999), "
    "used for the test and validation ELBO and saved as the checkpoint's model (the "
    "commands that load a run use it; their --weights trained takes the trained weights). "
    "0: off.",
)
@click.option(
    "--preset",
    type=click.Choice(tuple(PRESETS)),
    default=TrainConfig.preset,
    show_default=True,
    is_eager=True,
    callback=lambda ctx, param, value: _apply_preset(ctx, value),
    help=f"Named defaults; options given here or in --config override them. {describe_presets()}.",
)
# Speed on a GPU: mixed precision and compiled networks.
@click.option(
    "--precision",
    type=click.Choice(PRECISIONS),
    default=TrainConfig.precision,
    show_default=True,
    help="bf16: run the encoder and decoder (and m2's classifier) under bf16 autocast in the "
    "training steps (the ELBO, weights and optimizer stay float32; evaluation is float32). "
    "For GPUs, and CPUs with bf16 instructions (AVX512-BF16, AMX).",
)
@click.option(
    "--compile/--no-compile",
    "compile",
    default=TrainConfig.compile,
    show_default=True,
    help="Compile the encoder's and decoder's forward with torch.compile (checkpoints are "
    "unchanged), and what the likelihood asks for. The first steps pay the compilation. "
    "Meant for GPUs; slower on a CPU, except for --likelihood autoregressive-bernoulli.",
)
@verbosity_options
@click.pass_context
@user_errors
def train_command(ctx: click.Context, **options: Any) -> None:
    """Train a VAE with Pyro SVI and write a run directory.

    The options after --verbose are those of the installed components (plugins
    included): each goes to the chosen components that declare it. Any option
    can come from a TOML file (--config); each run writes its own as
    RUN/config.toml.
    """
    from pyrovae.api import train
    from pyrovae.model.build import check_model_config

    component_given = component_values(options)
    if options["resume"] is None:
        _leave_out_other_components_options(ctx, options, component_given)
    progress = options.pop("progress") and not quiet()
    devices = options.pop("devices")
    # Launch only once the options are known to be good: a bad one is then one
    # message, not one per process.
    launching = devices > 1 and "WORLD_SIZE" not in os.environ
    if options["resume"] is not None:
        _resume(ctx, options, component_given, progress=progress, devices=devices,
                launching=launching)  # fmt: skip
        return
    try:
        config = _run_config(options, component_given)
        config.train.threads = ctx.meta.get("pyrovae.threads")
        if launching:
            check_model_config(config.validate().model)
            _launch(ctx, devices)
        with _interruptible():
            train(config, options["out"], progress=progress, log=_log.info)
    except ConfigError as err:
        raise ConfigError(_naming_the_preset(ctx, str(err))) from None


def _naming_the_preset(ctx: click.Context, message: str) -> str:
    """``message`` and, where it names options that only ``--preset`` set (not the
    command line, not a ``--config`` file), which preset set them: a user told to leave
    out an option they never typed learns where it came from."""
    preset = ctx.params.get("preset") or TrainConfig.preset
    from_file = ctx.meta.get("pyrovae.config_names", set())
    named = [
        f"--{name.replace('_', '-')} {_as_text(value)}"
        for name, value in preset_options(preset).items()
        if _names_option(message, name)
        and ctx.get_parameter_source(name) == click.core.ParameterSource.DEFAULT_MAP
        and name not in from_file
    ]
    if not named:
        return message
    return (
        f"{message} ({', '.join(named)} came from --preset {preset}: give another value "
        "on the command line, or another --preset)"
    )


def _names_option(message: str, name: str) -> bool:
    """Whether ``message`` names option ``name`` as its cause: as ``--name`` (not the start
    of a longer option, ``--prior`` in ``--prior-hidden``), or, for an option of another
    component than the one chosen, as the kind of component it belongs to ("... it is an
    option of prior 'hierarchical'": the preset's ``--prior`` is what to change)."""
    option = re.escape(name.replace("_", "-"))
    belongs_to = message.partition("it is an option of ")[2]
    return bool(
        re.search(rf"--{option}(?![\w-])", message) or re.search(rf"\b{option} '", belongs_to)
    )


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
    from pyrovae.training.run import resumed_config

    given = {
        name
        for name in [*options, *component_given]
        if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE
    }
    extra = sorted(given - RESUME_OPTIONS)
    if extra:
        flags = ", ".join("--" + name.replace("_", "-") for name in extra)
        raise click.UsageError(
            "with --resume only --epochs, --device, --lr, --particles, --max-time, --precision, "
            "--compile, "
            f"--threads and --devices may be given, not {flags}"
        )
    if ctx.meta.get("pyrovae.config_file"):
        raise click.UsageError("--resume takes its options from the run, not from --config")
    changes = {
        "epochs": options["epochs"],
        "device": options["device"],
        "lr": options["lr"] if "lr" in given else None,
        "particles": options["particles"] if "particles" in given else None,
        "max_time": options["max_time"] if "max_time" in given else None,
        "precision": options["precision"] if "precision" in given else None,
        "compile": options["compile"] if "compile" in given else None,
        "threads": ctx.meta.get("pyrovae.threads"),
    }
    if launching:  # the resumed config is checked once here, not once per process
        resumed_config(Path(options["resume"]), **changes)
        _launch(ctx, devices)
    with _interruptible():
        resume(options["resume"], progress=progress, log=_log.info, **changes)


def _leave_out_other_components_options(
    ctx: click.Context, options: dict[str, Any], component_given: dict[str, Any]
) -> None:
    """Drop the options a ``--config`` file gives that none of the chosen components
    declares, saying so: a run's config.toml holds its components' options, and the
    command line may choose other components (``--likelihood bernoulli`` on an
    autoregressive run's file). Given on the command line, such an option is an error."""
    from pyrovae.model.spec import KINDS, REGISTRIES

    from_file = ctx.meta.get("pyrovae.config_names") or set()
    try:
        chosen = [REGISTRIES[kind].get(options[kind]) for kind in KINDS]
    except ConfigError:
        return  # an unknown component: the config's own check says so
    left_out = sorted(
        name
        for name, value in component_given.items()
        if value is not None
        and name in from_file
        and ctx.get_parameter_source(name) == click.core.ParameterSource.DEFAULT_MAP
        and not any(cls.option(name) is not None for cls in chosen)
    )
    for name in left_out:
        component_given[name] = None
    if left_out:
        _log.warning(
            "%s: left out %s, options of components other than the chosen %s",
            ctx.meta["pyrovae.config_file"],
            ", ".join(left_out),
            ", ".join(cls.title() for cls in chosen),
        )


def _run_config(options: dict[str, Any], component_given: dict[str, Any]) -> RunConfig:
    """The run config the options of a new run say."""
    from pyrovae.model.spec import model_config

    def pick(*names: str) -> dict[str, Any]:
        return {name: options[name] for name in names}

    data = DataConfig(**pick("dataset", "data_dir", "binarize", "val_fraction", "stream"))
    data.image_size, data.channels = options["image_size"], options["channels"]
    data.test_fraction = options["test_fraction"]
    model = model_config(
        **pick("kind", "network", "likelihood", "guide", "prior", "latent_dim"),
        **component_given,
    )
    train = TrainConfig(
        **pick("objective", "pyro_step", "elbo", "particles", "beta", "kl_warmup", "lr"),
        **pick("batch_size", "seed", "corrupt", "sparsity", "sparsity_weight"),
        epochs=TrainConfig.epochs if options["epochs"] is None else options["epochs"],
        device=options["device"] or TrainConfig.device,
    )
    train = dataclasses.replace(train, **pick(*CONVENIENCES), **pick(*QUALITY), **pick(*SPEED))
    data.labeled, train.aux_weight = options["labeled"], options["aux_weight"]  # m2
    return RunConfig(data=data, model=model, train=train)


def _launch(ctx: click.Context, devices: int) -> None:
    """Run this command again in ``devices`` processes under torchrun, and exit with it."""
    from pyrovae.training.distributed import launch

    threads = ctx.meta.get("pyrovae.threads")
    ctx.exit(launch(devices, _without_devices(sys.argv[1:]), threads=threads))


@contextmanager
def _interruptible() -> Iterator[None]:
    """Ctrl-C or SIGTERM: a one-line message saying what is kept and how to go on, not a
    traceback (nor, for SIGTERM, silence)."""
    from pyrovae.training import distributed
    from pyrovae.training.run import TrainingInterrupted, sigterm_stops_as_ctrl_c

    try:
        with sigterm_stops_as_ctrl_c():
            yield
    except TrainingInterrupted as err:
        if distributed.env_rank() > 0:  # Ctrl-C reaches every process: rank 0 says it
            raise SystemExit(1) from None
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


def _apply_preset(ctx: click.Context, value: str) -> str:
    """``--preset NAME``: its options become defaults under those of a ``--config`` file
    (read before or after it), so that the file and the command line override them."""
    ctx.default_map = {**preset_options(value), **(ctx.default_map or {})}
    return value


def _read_config_file(ctx: click.Context, value: str | None) -> None:
    """``--config FILE``: its keys become the defaults of the options of those names
    (dashes or underscores), so that the command line overrides them."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - the same parser, before it joined the standard library
        import tomli as tomllib

    from pyrovae.cli.options import component_options

    if value is None:
        return
    try:
        raw = tomllib.loads(Path(value).read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise click.BadParameter(f"cannot read {value}: {err}") from None
    names: dict[str, str] = {}
    for param in ctx.command.get_params(ctx):
        if isinstance(param, click.Option) and param.name not in NOT_IN_CONFIG_FILE:
            for flag in [param.name or "", *param.opts]:
                if not flag.startswith("-") or flag.startswith("--"):
                    names[flag.lstrip("-").replace("-", "_")] = param.name or ""
    components = {option.name for option in component_options()}
    defaults: dict[str, Any] = {}
    keys: dict[str, str] = {}
    for key, given in raw.items():
        name = names.get(key.replace("-", "_"))
        if name is None or (isinstance(given, dict) and name not in components):
            raise click.BadParameter(
                f"{value}: {key!r} is not an option of pyrovae train (keys are option names, "
                "e.g. latent_dim = 4, at the top level)"
            )
        if name in keys:
            raise click.BadParameter(f"{value}: {keys[name]!r} and {key!r} name one option")
        keys[name] = key
        defaults[name] = _as_text(given) if name in components else _scalar(value, key, given)
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    ctx.meta["pyrovae.config_file"] = value
    ctx.meta["pyrovae.config_names"] = set(defaults)


def _scalar(file: str, key: str, given: Any) -> str:
    """A config file's value of an option that takes one value, as the command line
    gives it: as text, so that the option's own type reads it and says what is wrong
    (``epochs = 1.7`` is not a whole number; ``latent_dim = true`` is not one either)."""
    if isinstance(given, bool):
        return "true" if given else "false"
    if isinstance(given, (str, int, float)):
        return str(given)
    raise click.BadParameter(
        f"{file}: {key} = {given} is a {type(given).__name__}: give a number, a string "
        "or true/false"
    )


def _as_text(value: Any) -> Any:
    """A component option from a config file, as the command line would give it."""
    if isinstance(value, list):
        return ",".join(str(item) for item in value)
    if isinstance(value, dict):  # a module network's {"class": ..., "kwargs": ...}
        return json.dumps(value)
    return value if isinstance(value, str) else str(value)
