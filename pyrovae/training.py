"""Training: stochastic variational inference on the VAE's model and guide.

Each step differentiates a Pyro ELBO estimator (``TraceMeanField_ELBO`` by
default) of the model and guide on one minibatch and takes an Adam step: the
loop :class:`pyro.infer.SVI` runs, with a torch optimizer over the module's
parameters so that the whole state lives in one ``state_dict``; the step
itself (:mod:`pyrovae.step`) runs at the speed of a hand-written PyTorch loop.
Launched by ``torchrun`` it trains data-parallel (:mod:`pyrovae.distributed`),
with rank 0 writing the run directory. On top: KL
warm-up (β from 0 to ``beta`` over ``kl_warmup`` epochs; Bowman et al. 2016,
Sønderby et al. 2016), a test-set evaluation each epoch, an atomic checkpoint
each epoch, and exact resume (model, optimizer, epoch and RNG state).

Reliability: the run directory is created and locked (:mod:`pyrovae.rundir`)
before the data load, so a bad ``--out`` or a second writer is one line at
once; a model too large for memory is refused before it is allocated
(:mod:`pyrovae.memory`); a loss that becomes NaN or grows without bound stops
the run (:mod:`pyrovae.divergence`); every failure and Ctrl-C says which
checkpoint is kept and how to go on.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import torch

from pyrovae import distributed, divergence, rundir, threads
from pyrovae.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from pyrovae.config import RunConfig, TrainConfig
from pyrovae.data import (
    ImageData,
    check_finite_unit_interval,
    is_binary,
    load_dataset,
    to_unit_float,
)
from pyrovae.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    FileWriteError,
    TrainingError,
    first_line,
)
from pyrovae.files import atomic_write_text
from pyrovae.likelihoods import LIKELIHOODS
from pyrovae.memory import build_vae
from pyrovae.model import VAE
from pyrovae.objectives import (
    ELBO_MAX_DRAWS,
    ELBO_TARGET_STDERR,
    average_elbo_terms,
    make_objective,
)
from pyrovae.step import TrainStep, make_optimizer, train_epoch

CONFIG_NAME = "config.json"
METRICS_NAME = "metrics.jsonl"
#: What :func:`pyrovae.plots.save_run_figures` draws at the end of a run.
RUN_FIGURES = ("samples.png", "reconstructions.png", "loss_curve.png")
Logger = Callable[[str], None]


@dataclass
class TrainResult:
    """What :func:`train` returns: the run folder, its config and the trained VAE."""

    run_dir: Path
    config: RunConfig
    vae: VAE
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def final(self) -> dict[str, Any]:
        """Metrics of the last epoch."""
        return self.history[-1]


def resolve_device(name: str) -> torch.device:
    """``auto`` takes CUDA when present; asking for CUDA without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but torch sees no CUDA device")
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"--device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


def prepare_data(config: RunConfig, device: torch.device) -> ImageData:
    """Load the data set, check it fits the likelihood, binarize statically if asked.

    The test set of a binary likelihood is binarized once with a fixed seed,
    so that test ELBOs are comparable across epochs and runs.
    """
    data = load_dataset(config.data.dataset, config.data.data_dir, seed=config.train.seed)
    for split, images in (("training", data.train), ("test", data.test)):
        check_finite_unit_interval(images, f"the {split} set of {data.name}")
    likelihood = LIKELIHOODS.get(config.model.likelihood)
    if likelihood.binary:
        if config.data.binarize == "none":
            if not (is_binary(data.train) and is_binary(data.test)):
                raise DataError(
                    f"likelihood {config.model.likelihood} needs pixels that are exactly 0 or 1, "
                    f"but {data.name} has intensities; use --binarize dynamic or static"
                )
        else:
            generator = torch.Generator().manual_seed(config.train.seed + 1)
            test = _binarize_like(data.test, generator)
            train = data.train
            if config.data.binarize == "static":
                train = _binarize_like(data.train, generator)
            data = ImageData(data.name, train, test, data.train_labels, data.test_labels)
    return data.to(device)


def _binarize_like(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Bernoulli draws of ``images``' intensities, stored in ``images``' dtype (uint8 as 0/255)."""
    binary = torch.bernoulli(to_unit_float(images), generator=generator)
    return binary.mul(255).to(torch.uint8) if images.dtype == torch.uint8 else binary


def split_images(
    config: RunConfig, data: ImageData, split: str
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The images and labels of ``split`` (``test`` or ``train``) as evaluations score them.

    For a binary likelihood the test split is already binarized (by
    :func:`prepare_data`); a training split that is not (``--binarize dynamic``
    resamples it every batch) is binarized here, once, with a fixed seed, so that
    evaluations of the training split are repeatable.
    """
    if split not in ("test", "train"):
        raise ConfigError(f"--split must be test or train, got {split!r}")
    if split == "test":
        return data.test, data.test_labels
    images = data.train
    if LIKELIHOODS.get(config.model.likelihood).binary and not is_binary(images):
        generator = torch.Generator().manual_seed(config.train.seed + 2)
        images = _binarize_like(images.cpu(), generator).to(images.device)
    return images, data.train_labels


def kl_weight(config: RunConfig, step: int, steps_per_epoch: int) -> float:
    """β at global step ``step``: linear from just above 0 to ``beta`` over the warm-up."""
    warmup_steps = config.train.kl_warmup * steps_per_epoch
    if warmup_steps == 0:
        return config.train.beta
    return config.train.beta * min(1.0, (step + 1) / warmup_steps)


@torch.no_grad()
def evaluate_elbo(
    vae: VAE,
    images: torch.Tensor,
    batch_size: int = 1000,
    *,
    target_stderr: float = ELBO_TARGET_STDERR,
    max_draws: int = ELBO_MAX_DRAWS,
) -> dict[str, float]:
    """Mean per-data-point ELBO, reconstruction term and KL (nats) over ``images``.

    Each image's terms are averaged over enough draws of z that the Monte Carlo
    standard error of the mean ELBO is below ``target_stderr``, within at most
    ``max_draws`` draws per image and 50,000 in all
    (:func:`pyrovae.objectives.average_elbo_terms`); the standard error reached is
    returned either way.
    Returns ``elbo``, ``recon``, ``kl``, ``elbo_mc_stderr`` and ``draws``.
    """
    was_training = vae.training
    vae.eval()
    try:
        estimate = average_elbo_terms(
            vae.model,
            vae.guide,
            images,
            target_stderr=target_stderr,
            max_draws=max_draws,
            batch_size=batch_size,
        )
    finally:
        vae.train(was_training)
    recon, kl = float(estimate.recon.mean()), float(estimate.kl.mean())
    return {
        "elbo": recon - kl,
        "recon": recon,
        "kl": kl,
        "elbo_mc_stderr": estimate.mc_stderr("elbo"),
        "draws": estimate.draws,
    }


def default_run_dir(config: RunConfig, root: Path = Path("runs")) -> Path:
    """A fresh folder ``runs/<time>-<dataset>-<likelihood>``."""
    stem = Path(config.data.dataset).stem if "/" in config.data.dataset else config.data.dataset
    base = root / f"{datetime.now():%Y%m%d-%H%M%S}-{stem}-{config.model.likelihood}"
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def _write_metrics(run_dir: Path, history: list[dict[str, Any]]) -> None:
    text = "".join(json.dumps(row) + "\n" for row in history)
    atomic_write_text(run_dir / METRICS_NAME, text)


def _silent(message: str) -> None:
    """The log of processes other than rank 0."""


def _rng_state(data_generator: torch.Generator, device: torch.device) -> dict[str, Any]:
    """The streams training draws from: torch's CPU one, the training GPU's, the permutations'.

    Only the training GPU's: a CPU run must not start CUDA on a machine that has it,
    and a run must resume on a machine with fewer GPUs.
    """
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "data": data_generator.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(
    state: dict[str, Any], data_generator: torch.Generator, device: torch.device
) -> None:
    torch.set_rng_state(state["torch"])
    data_generator.set_state(state["data"])
    cuda = state.get("cuda")
    if isinstance(cuda, list):  # older checkpoints held every visible GPU's state
        index = device.index or 0
        cuda = cuda[index] if index < len(cuda) else None
    if cuda is not None and device.type == "cuda":
        torch.cuda.set_rng_state(cuda, device)


def train(
    config: RunConfig,
    out: str | Path | None = None,
    *,
    progress: bool = True,
    log: Logger = print,
) -> TrainResult:
    """Train a new VAE; write its run folder; return the result.

    Parameters
    ----------
    config
        The run config. It is validated before any data is read or any
        folder is made.
    out
        The run folder; default a fresh one under ``runs/``. It must not hold
        a run already (use :func:`resume` for that).
    progress
        Show a progress bar per epoch.
    log
        Where the per-epoch lines go.

    Example
    -------
    >>> from pyrovae import RunConfig, train
    >>> result = train(RunConfig(), progress=False)  # digits, Bernoulli, 30 epochs
    >>> result.final["test_elbo"]  # doctest: +SKIP
    """
    config.validate()
    with distributed.session(resolve_device(config.train.device)) as context:
        # Rank 0 creates and locks the folder before the data load, so that a bad
        # --out or a second writer is one line at once; every process learns its name.
        claimed: list[rundir.Claim] = []
        run_dir = context.on_main(lambda: _claim_new(out, config, claimed))
        with _holding(claimed, run_dir, fresh=True):
            return _fit(
                config, run_dir, checkpoint=None, progress=progress, log=log, context=context
            )


def _claim_new(out: str | Path | None, config: RunConfig, claimed: list[rundir.Claim]) -> Path:
    """Create and lock the folder of a new run (``out``, or a fresh one under ``runs/``)."""
    if out is None:
        while True:  # two runs started in the same second both pick the same name
            try:
                claim = rundir.claim(default_run_dir(config), create=True, exclusive=True)
                break
            except FileExistsError:
                continue
    else:
        claim = rundir.claim(out, create=True)
    if (claim.path / CONFIG_NAME).exists() or (claim.path / CHECKPOINT_NAME).exists():
        claim.release()
        raise ConfigError(
            f"{claim.path} already holds a run; resume it with --resume {claim.path}"
            " or pick another --out"
        )
    claimed.append(claim)
    return claim.path


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`train` or :func:`resume`; the message says what is kept
    in the run directory and how to go on."""


@contextmanager
def _holding(claimed: list[rundir.Claim], run_dir: Path, *, fresh: bool) -> Iterator[None]:
    """Hold rank 0's claim on ``run_dir`` for the block and release it after.

    A fresh run that fails before it wrote its config (bad input, Ctrl-C during
    the data load) is not a run yet: what its claim created is removed.
    """
    try:
        yield
    except BaseException as err:
        for claim in claimed:
            if fresh and not (run_dir / CONFIG_NAME).exists():
                claim.discard()
        if isinstance(err, KeyboardInterrupt) and not isinstance(err, TrainingInterrupted):
            raise TrainingInterrupted(interrupted_message(run_dir)) from None
        raise
    finally:
        for claim in claimed:
            claim.release()


def interrupted_message(run_dir: Path) -> str:
    """What an interruption leaves in ``run_dir``, and how to go on from it."""
    if (run_dir / CHECKPOINT_NAME).exists():
        try:
            kept = f"the checkpoint of epoch {load_checkpoint(run_dir / CHECKPOINT_NAME)['epoch']}"
        except (CheckpointError, KeyError):
            kept = "its last checkpoint"
        return (
            f"interrupted; {kept} in {run_dir} is kept: continue with "
            f"`pyrovae train --resume {run_dir}`"
        )
    if (run_dir / CONFIG_NAME).exists():
        return (
            f"interrupted before the first checkpoint; `pyrovae train --resume {run_dir}` "
            "starts the run over from its config.json"
        )
    return "interrupted before training started; nothing was written: run the command again"


def resume(
    run_dir: str | Path,
    *,
    epochs: int | None = None,
    device: str | None = None,
    lr: float | None = None,
    progress: bool = True,
    log: Logger = print,
) -> TrainResult:
    """Continue the run in ``run_dir`` from its last checkpoint (from the start
    when it was stopped before its first checkpoint).

    ``epochs`` raises the total number of epochs (the run's own by default);
    ``device`` moves it to another device; ``lr`` changes Adam's step size
    from here on (e.g. after the loss diverged; config.json records it). On
    CPU a resumed run ends with the same parameters as one that was never
    stopped. A run whose epochs are all done but whose figures are missing
    (stopped while drawing them) gets its figures drawn.

    The run directory is locked while it trains: resuming a run that another
    process is training is refused. Temporary files left by an interrupted
    write are removed.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"no run directory at {run_dir}")
    config = _resumed_config(run_dir, epochs=epochs, device=device, lr=lr)
    with distributed.session(resolve_device(config.train.device)) as context:
        claimed: list[rundir.Claim] = []
        removed = context.on_main(lambda: _claim_existing(run_dir, claimed))
        with _holding(claimed, run_dir, fresh=False):
            if removed:
                log(f"removed temporary files left by an interrupted write: {', '.join(removed)}")
            # Read again under the lock: another process may have written it meanwhile.
            config = _resumed_config(run_dir, epochs=epochs, device=device, lr=lr)
            # A run stopped before its first epoch ended has its config but no
            # checkpoint: it starts over from that config.
            has_checkpoint = (run_dir / CHECKPOINT_NAME).exists()
            checkpoint = load_checkpoint(run_dir / CHECKPOINT_NAME) if has_checkpoint else None
            done = int(checkpoint.get("epoch", 0)) if checkpoint is not None else 0
            if done >= config.train.epochs:
                missing = [name for name in RUN_FIGURES if not (run_dir / name).exists()]
                if checkpoint is None or not missing or done > config.train.epochs:
                    raise ConfigError(
                        f"{run_dir} has trained {done} epochs already; "
                        f"pass --epochs N with N > {done} to train further"
                    )
                log(f"{run_dir} has trained all {done} epochs; drawing its missing figures")
            return _fit(
                config, run_dir, checkpoint=checkpoint, progress=progress, log=log, context=context
            )


def _resumed_config(
    run_dir: Path, *, epochs: int | None, device: str | None, lr: float | None
) -> RunConfig:
    config = RunConfig.load(run_dir / CONFIG_NAME)
    if epochs is not None:
        config.train.epochs = epochs
    if device is not None:
        config.train.device = device  # type: ignore[assignment]
    if lr is not None:
        config.train.lr = lr
    return config.validate()


def _claim_existing(run_dir: Path, claimed: list[rundir.Claim]) -> list[str]:
    """Lock an existing run's folder; remove what interrupted writes left; their names."""
    claim = rundir.claim(run_dir, create=False)
    claimed.append(claim)
    return [path.name for path in rundir.clean_stale_temporaries(claim)]


def _fit(
    config: RunConfig,
    run_dir: Path,
    *,
    checkpoint: dict[str, Any] | None,
    progress: bool,
    log: Logger,
    context: distributed.Context | None = None,
) -> TrainResult:
    from tqdm.auto import tqdm

    from pyrovae.plots import save_run_figures

    context = context or distributed.Context()
    if not context.is_main:
        log, progress = _silent, False
    device = context.device(resolve_device(config.train.device))
    # Each machine's first process loads the data first, so that a data set it
    # downloads is on disk before the others look for it (no concurrent downloads).
    first_on_machine = context.local_rank == 0
    if not first_on_machine:
        context.barrier()
    data = prepare_data(config, device)
    if first_on_machine:
        context.barrier()
    if checkpoint is not None and config.model.image_shape != data.image_shape:
        raise CheckpointError(
            f"the run was trained on images of shape {config.model.image_shape}, "
            f"but {config.data.dataset} now has {data.image_shape}"
        )
    config.model.image_shape = data.image_shape

    torch.manual_seed(config.train.seed)
    data_generator = torch.Generator().manual_seed(config.train.seed)
    vae = build_vae(config.model, device)
    context.broadcast_parameters(vae)
    objective = make_objective(config.train)
    binarize = LIKELIHOODS.get(config.model.likelihood).binary and config.data.binarize == "dynamic"
    # Of the model as built: the same on a fresh and a resumed run, and on every process.
    untrained = divergence.untrained_loss(vae, objective, data.train, binarize=binarize)
    loss_limit = context.broadcast(divergence.loss_limit(untrained, data.image_shape))
    if context.rank > 0:  # distinct draws per process; rank 0 keeps the single-process stream
        torch.manual_seed(distributed.rank_seed(config.train.seed, context.rank))
    optimizer = make_optimizer(vae.parameters(), lr=config.train.lr)
    history: list[dict[str, Any]] = []
    start_epoch = 0
    if checkpoint is not None:
        history, start_epoch = _restore(
            checkpoint, vae, optimizer, data_generator, device, context, config, run_dir, log
        )

    # Everything that can fail on bad input has run (on every process): only now
    # write into the run directory (claimed by rank 0 before the data load).
    context.barrier()
    if context.is_main:
        with _saying_what_is_kept(run_dir, start_epoch):
            config.save(run_dir / CONFIG_NAME)
            if checkpoint is not None:
                _write_metrics(run_dir, history)  # drop lines of epochs after the checkpoint
    log(f"run directory: {run_dir} (device {device}, {threads.describe()})")
    if context.enabled:
        log(
            f"data-parallel over {context.world_size} processes, "
            f"global batch {config.train.batch_size}"
        )

    gradient_hook = context.all_reduce_gradients if context.enabled else None
    step = TrainStep(
        vae, objective, optimizer, fast=not config.train.pyro_step, gradient_hook=gradient_hook
    )
    n_train, batch_size = data.train.shape[0], config.train.batch_size
    steps_per_epoch = math.ceil(n_train / batch_size)

    for epoch in range(start_epoch, config.train.epochs):
        vae.train()
        started = time.perf_counter()
        # The same permutation on every process (same generator state); each takes its shard.
        order = torch.randperm(n_train, generator=data_generator).to(device)
        bar = tqdm(
            range(steps_per_epoch),
            desc=f"epoch {epoch + 1}/{config.train.epochs}",
            disable=None if progress else True,
            leave=False,
            unit="batch",
        )

        def show_loss(step: int, total: torch.Tensor, bar: Any = bar) -> None:
            if not bar.disable:
                seen = min(n_train, (step + 1) * batch_size) / context.world_size
                bar.set_postfix(loss=f"{total.item() / seen:.2f}")

        def beta(i: int, first: int = epoch * steps_per_epoch) -> float:
            return kl_weight(config, first + i, steps_per_epoch)

        total = train_epoch(
            step,
            data.train,
            order,
            batch_size,
            binarize=binarize,
            beta=beta,
            shard=(context.rank, context.world_size),
            steps=bar,
            on_log=show_loss,
        )
        bar.close()
        train_loss = context.sum(total).item() / n_train
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        if divergence.diverged(train_loss, loss_limit):
            raise TrainingError(
                f"{divergence.describe(train_loss, loss_limit, epoch + 1)}; {_kept(run_dir, epoch)}"
                f"; lower the learning rate, e.g. `pyrovae train --resume {run_dir} "
                f"--lr {min(config.train.lr / 10, TrainConfig.lr):.3g}`"
            )
        if not context.is_main:
            context.all_gather(_rng_state(data_generator, device))
            history.append(cast(dict[str, Any], context.broadcast(None)))  # rank 0's row
            continue
        test = evaluate_elbo(vae, data.test)
        # After the evaluation, which draws z too: the state the next epoch starts from.
        rng_states = context.all_gather(_rng_state(data_generator, device))
        row = {
            "epoch": epoch + 1,
            "train_elbo": -train_loss,
            "beta": vae.beta,
            "test_elbo": test["elbo"],
            "test_recon": test["recon"],
            "test_kl": test["kl"],
            "test_elbo_mc_stderr": test["elbo_mc_stderr"],
            "test_elbo_draws": test["draws"],
            "images_per_s": n_train / seconds,
            "seconds": seconds,
        }
        history.append(context.broadcast(row))
        state = {
            "epoch": epoch + 1,
            "model": vae.state_dict(),
            "optimizer": optimizer.state_dict(),
            "rng": rng_states[0],
            "history": history,
        }
        if context.enabled:
            state["rng_ranks"] = rng_states
        with _saying_what_is_kept(run_dir, epoch):
            save_checkpoint(run_dir / CHECKPOINT_NAME, state)
        with _saying_what_is_kept(run_dir, epoch + 1):
            _write_metrics(run_dir, history)
        beta_note = "" if vae.beta == 1.0 else f" (beta {vae.beta:.3g})"
        log(
            f"epoch {epoch + 1:>3}/{config.train.epochs}  train ELBO {-train_loss:9.3f}{beta_note}"
            f"  test ELBO {test['elbo']:9.3f} ± {test['elbo_mc_stderr']:.3f}"
            f"  recon {test['recon']:9.3f}  KL {test['kl']:7.3f}"
            f"  {n_train / seconds:8.0f} img/s"
        )

    vae.beta = 1.0
    vae.eval()
    if context.is_main:
        with _saying_what_is_kept(run_dir, config.train.epochs, figures=True):
            figures = save_run_figures(vae, data.test, history, run_dir)
        log("wrote " + ", ".join(str(path) for path in figures))
    context.barrier()
    return TrainResult(run_dir=run_dir, config=config, vae=vae, history=history)


def _kept(run_dir: Path, epochs_done: int) -> str:
    if epochs_done > 0:
        return f"the checkpoint of epoch {epochs_done} in {run_dir} is kept"
    if (run_dir / CONFIG_NAME).exists():
        return f"no checkpoint was written ({run_dir} holds the config: --resume starts it over)"
    return "nothing was kept"


def _go_on(run_dir: Path) -> str:
    """How to continue the run in ``run_dir`` (or start it again when it holds nothing)."""
    if (run_dir / CONFIG_NAME).exists():
        return f"continue with `pyrovae train --resume {run_dir}`"
    return "run the command again"


@contextmanager
def _saying_what_is_kept(
    run_dir: Path, epochs_done: int, *, figures: bool = False
) -> Iterator[None]:
    """A failed write into the run (disk full) says which checkpoint is kept and how to go on."""
    try:
        yield
    except FileWriteError as err:
        if figures:
            then = f"all {epochs_done} epochs are checkpointed in {run_dir}"
        else:
            then = _kept(run_dir, epochs_done)
        raise FileWriteError(f"{err}; {then}: free some space and {_go_on(run_dir)}") from None


def _restore(
    checkpoint: dict[str, Any],
    vae: VAE,
    optimizer: torch.optim.Optimizer,
    data_generator: torch.Generator,
    device: torch.device,
    context: distributed.Context,
    config: RunConfig,
    run_dir: Path,
    log: Logger,
) -> tuple[list[dict[str, Any]], int]:
    """Load the checkpoint's model, optimizer and RNG states; its history and epoch.

    The learning rate is the config's (``resume --lr`` or an edited config.json),
    not the one saved with the optimizer's state.
    """
    try:
        vae.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        _set_rng_state(checkpoint["rng"], data_generator, device)
        if context.rank > 0:
            ranks = checkpoint.get("rng_ranks", [])
            if len(ranks) == context.world_size:
                _set_rng_state(ranks[context.rank], data_generator, device)
            else:  # the world size changed: fresh, still deterministic, draws
                torch.manual_seed(
                    distributed.rank_seed(config.train.seed + checkpoint["epoch"], context.rank)
                )
        history, epoch = list(checkpoint["history"]), int(checkpoint["epoch"])
    except (KeyError, RuntimeError, ValueError, TypeError) as err:
        raise CheckpointError(
            f"checkpoint in {run_dir} does not match its config: {first_line(err)}"
        ) from None
    saved_lr = optimizer.param_groups[0]["lr"]
    for group in optimizer.param_groups:
        group["lr"] = config.train.lr
    if epoch < config.train.epochs:
        lr_note = "" if saved_lr == config.train.lr else f", lr {saved_lr:g} -> {config.train.lr:g}"
        log(f"resuming {run_dir} after epoch {epoch} of {config.train.epochs}{lr_note}")
    return history, epoch
