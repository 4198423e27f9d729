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
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import torch

from pyrovae import distributed
from pyrovae.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from pyrovae.config import RunConfig
from pyrovae.data import (
    ImageData,
    check_finite_unit_interval,
    is_binary,
    load_dataset,
    to_unit_float,
)
from pyrovae.errors import CheckpointError, ConfigError, DataError, TrainingError, first_line
from pyrovae.files import atomic_write_text
from pyrovae.likelihoods import LIKELIHOODS
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
        # Under torchrun every process trains, rank 0 names the folder.
        run_dir = context.broadcast(Path(out) if out is not None else default_run_dir(config))
        if (run_dir / CONFIG_NAME).exists() or (run_dir / CHECKPOINT_NAME).exists():
            raise ConfigError(
                f"{run_dir} already holds a run; resume it with --resume {run_dir}"
                " or pick another --out"
            )
        if run_dir.exists() and not run_dir.is_dir():
            raise ConfigError(f"--out {run_dir} exists and is not a folder")
        return _fit(config, run_dir, checkpoint=None, progress=progress, log=log, context=context)


def resume(
    run_dir: str | Path,
    *,
    epochs: int | None = None,
    device: str | None = None,
    progress: bool = True,
    log: Logger = print,
) -> TrainResult:
    """Continue the run in ``run_dir`` from its last checkpoint (from the start
    when it was stopped before its first checkpoint).

    ``epochs`` raises the total number of epochs (the run's own by default);
    ``device`` moves it to another device. On CPU a resumed run ends with the
    same parameters as one that was never stopped.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"no run directory at {run_dir}")
    config = RunConfig.load(run_dir / CONFIG_NAME)
    if epochs is not None:
        config.train.epochs = epochs
    if device is not None:
        config.train.device = device  # type: ignore[assignment]
    config.validate()
    # A run stopped before its first epoch ended has its config but no checkpoint:
    # it starts over from that config (a fresh --out would refuse the folder).
    has_checkpoint = (run_dir / CHECKPOINT_NAME).exists()
    checkpoint = load_checkpoint(run_dir / CHECKPOINT_NAME) if has_checkpoint else None
    done = int(checkpoint.get("epoch", 0)) if checkpoint is not None else 0
    if done >= config.train.epochs:
        raise ConfigError(
            f"{run_dir} has trained {done} epochs already; "
            f"pass --epochs N with N > {done} to train further"
        )
    with distributed.session(resolve_device(config.train.device)) as context:
        return _fit(
            config, run_dir, checkpoint=checkpoint, progress=progress, log=log, context=context
        )


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
    vae = VAE(config.model).to(device)
    context.broadcast_parameters(vae)
    if context.rank > 0:  # distinct draws per process; rank 0 keeps the single-process stream
        torch.manual_seed(distributed.rank_seed(config.train.seed, context.rank))
    optimizer = make_optimizer(vae.parameters(), lr=config.train.lr)
    history: list[dict[str, Any]] = []
    start_epoch = 0
    if checkpoint is not None:
        try:
            vae.load_state_dict(checkpoint["model"])
            optimizer.load_state_dict(checkpoint["optimizer"])
            _set_rng_state(checkpoint["rng"], data_generator, device)
            if context.rank > 0:
                ranks = checkpoint.get("rng_ranks", [])
                if len(ranks) == context.world_size:
                    _set_rng_state(ranks[context.rank], data_generator, device)
                else:  # the world size changed: fresh, still deterministic, draws
                    seed = distributed.rank_seed(
                        config.train.seed + checkpoint["epoch"], context.rank
                    )
                    torch.manual_seed(seed)
            history = list(checkpoint["history"])
            start_epoch = int(checkpoint["epoch"])
        except (KeyError, RuntimeError, ValueError, TypeError) as err:
            raise CheckpointError(
                f"checkpoint in {run_dir} does not match its config: {first_line(err)}"
            ) from None
        log(f"resuming {run_dir} after epoch {start_epoch} of {config.train.epochs}")

    # Everything that can fail on bad input has run (on every process): only now
    # touch the disk, from rank 0 alone.
    context.barrier()
    if context.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        config.save(run_dir / CONFIG_NAME)
        if checkpoint is not None:
            _write_metrics(run_dir, history)  # drop lines of epochs after the checkpoint
    log(f"run directory: {run_dir}")
    if context.enabled:
        log(
            f"data-parallel over {context.world_size} processes, "
            f"global batch {config.train.batch_size}"
        )

    objective = make_objective(config.train)
    gradient_hook = context.all_reduce_gradients if context.enabled else None
    step = TrainStep(
        vae, objective, optimizer, fast=not config.train.pyro_step, gradient_hook=gradient_hook
    )
    binarize = LIKELIHOODS.get(config.model.likelihood).binary and config.data.binarize == "dynamic"
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
        if not math.isfinite(train_loss):
            raise TrainingError(
                f"the loss became {train_loss} in epoch {epoch + 1}; the checkpoint of epoch "
                f"{epoch} in {run_dir} is kept; try a lower --lr"
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
        save_checkpoint(run_dir / CHECKPOINT_NAME, state)
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
        figures = save_run_figures(vae, data.test, history, run_dir)
        log("wrote " + ", ".join(str(path) for path in figures))
    context.barrier()
    return TrainResult(run_dir=run_dir, config=config, vae=vae, history=history)
