"""The epoch loop: stochastic variational inference on the VAE's model and guide.

Each step differentiates a Pyro ELBO estimator (``TraceMeanField_ELBO`` by
default) of the model and guide on one minibatch and takes an Adam step
(:mod:`pyrovae.training.step`); after each epoch the test ELBO is estimated,
divergence is checked, and the checkpoint and metrics are written atomically.
Launched by ``torchrun`` it trains data-parallel
(:mod:`pyrovae.training.distributed`), with rank 0 writing the run folder.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch

from pyrovae.config import RunConfig, TrainConfig
from pyrovae.data.prepare import prepare_data
from pyrovae.errors import (
    CheckpointError,
    FileWriteError,
    TrainingError,
    first_line,
)
from pyrovae.files import CHECKPOINT_NAME, CONFIG_NAME, METRICS_NAME, atomic_write_text
from pyrovae.inference.objectives import (
    evaluate_elbo,
    make_objective,
)
from pyrovae.model.build import build_vae
from pyrovae.model.networks.base import Networks
from pyrovae.model.spec import completed, component_class
from pyrovae.model.vae import VAE
from pyrovae.runtime import describe_threads, resolve_device
from pyrovae.training import distributed, divergence
from pyrovae.training.checkpoint import save_checkpoint
from pyrovae.training.schedules import kl_weight
from pyrovae.training.step import TrainStep, make_optimizer, train_epoch

Logger = Callable[[str], None]
#: What runs once the epochs are done, on rank 0, while the run folder is still
#: locked: ``finish(vae, test_images, history, run_dir)`` returns the files it
#: wrote (the API draws the run's figures; the training layer knows no reports).
Finish = Callable[[VAE, torch.Tensor, list[dict[str, Any]], Path], list[Path]]


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


def write_metrics(run_dir: Path, history: list[dict[str, Any]]) -> None:
    text = "".join(json.dumps(row) + "\n" for row in history)
    atomic_write_text(run_dir / METRICS_NAME, text)


def silent(message: str) -> None:
    """The log of processes other than rank 0."""


def rng_state(data_generator: torch.Generator, device: torch.device) -> dict[str, Any]:
    """The streams training draws from: torch's CPU one, the training GPU's, the permutations'.

    Only the training GPU's: a CPU run must not start CUDA on a machine that has it,
    and a run must resume on a machine with fewer GPUs.
    """
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "data": data_generator.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(
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


def fit(
    config: RunConfig,
    run_dir: Path,
    *,
    checkpoint: dict[str, Any] | None,
    progress: bool,
    log: Logger,
    context: distributed.Context | None = None,
    finish: Finish | None = None,
    modules: Networks | None = None,
) -> TrainResult:
    from tqdm.auto import tqdm

    context = context or distributed.Context()
    if not context.is_main:
        log, progress = silent, False
    device = context.device(resolve_device(config.train.device))
    # Each machine's first process loads the data first, so that a data set it
    # downloads is on disk before the others look for it (no concurrent downloads).
    first_on_machine = context.local_rank == 0
    if not first_on_machine:
        context.barrier()
    data = prepare_data(config, device, binary=component_class(config.model, "likelihood").binary)
    if first_on_machine:
        context.barrier()
    if checkpoint is not None and config.model.data_shape != data.image_shape:
        raise CheckpointError(
            f"the run was trained on images of shape {config.model.data_shape}, "
            f"but {config.data.dataset} now has {data.image_shape}"
        )
    config.model.data_shape = data.image_shape
    # Every option written out, and who provides each component: the run is rebuilt as trained.
    config.model = completed(config.model)

    torch.manual_seed(config.train.seed)
    data_generator = torch.Generator().manual_seed(config.train.seed)
    vae = build_vae(config.model, device, modules=modules)
    context.broadcast_parameters(vae)
    objective = make_objective(config.train)
    binarize = (
        component_class(config.model, "likelihood").binary and config.data.binarize == "dynamic"
    )
    # Of the model as built: the same on a fresh and a resumed run, and on every process.
    untrained = divergence.untrained_loss(vae, objective, data.train, binarize=binarize)
    loss_limit = context.broadcast(divergence.loss_limit(untrained, data.image_shape))
    if context.rank > 0:  # distinct draws per process; rank 0 keeps the single-process stream
        torch.manual_seed(distributed.rank_seed(config.train.seed, context.rank))
    optimizer = make_optimizer(vae.parameters(), lr=config.train.lr)
    history: list[dict[str, Any]] = []
    start_epoch = 0
    if checkpoint is not None:
        history, start_epoch = restore(
            checkpoint, vae, optimizer, data_generator, device, context, config, run_dir, log
        )

    # Everything that can fail on bad input has run (on every process): only now
    # write into the run directory (claimed by rank 0 before the data load).
    context.barrier()
    if context.is_main:
        with saying_what_is_kept(run_dir, start_epoch):
            config.save(run_dir / CONFIG_NAME)
            if checkpoint is not None:
                write_metrics(run_dir, history)  # drop lines of epochs after the checkpoint
    log(f"run directory: {run_dir} (device {device}, {describe_threads()})")
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
                f"{divergence.describe(train_loss, loss_limit, epoch + 1)}; "
                f"{kept_message(run_dir, epoch)}"
                f"; lower the learning rate, e.g. `pyrovae train --resume {run_dir} "
                f"--lr {min(config.train.lr / 10, TrainConfig.lr):.3g}`"
            )
        if not context.is_main:
            context.all_gather(rng_state(data_generator, device))
            history.append(cast(dict[str, Any], context.broadcast(None)))  # rank 0's row
            continue
        test = evaluate_elbo(vae, data.test)
        # After the evaluation, which draws z too: the state the next epoch starts from.
        rng_states = context.all_gather(rng_state(data_generator, device))
        row = {
            "epoch": epoch + 1,
            "train_elbo": -train_loss,
            "beta": beta(steps_per_epoch - 1),  # the KL weight the epoch ended at
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
        with saying_what_is_kept(run_dir, epoch):
            save_checkpoint(run_dir / CHECKPOINT_NAME, state)
        with saying_what_is_kept(run_dir, epoch + 1):
            write_metrics(run_dir, history)
        beta_note = "" if row["beta"] == 1.0 else f" (beta {row['beta']:.3g})"
        log(
            f"epoch {epoch + 1:>3}/{config.train.epochs}  train ELBO {-train_loss:9.3f}{beta_note}"
            f"  test ELBO {test['elbo']:9.3f} ± {test['elbo_mc_stderr']:.3f}"
            f"  recon {test['recon']:9.3f}  KL {test['kl']:7.3f}"
            f"  {n_train / seconds:8.0f} img/s"
        )

    vae.eval()
    if context.is_main and finish is not None:
        with saying_what_is_kept(run_dir, config.train.epochs, figures=True):
            figures = finish(vae, data.test, history, run_dir)
        log("wrote " + ", ".join(str(path) for path in figures))
    context.barrier()
    return TrainResult(run_dir=run_dir, config=config, vae=vae, history=history)


def restore(
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
        set_rng_state(checkpoint["rng"], data_generator, device)
        if context.rank > 0:
            ranks = checkpoint.get("rng_ranks", [])
            if len(ranks) == context.world_size:
                set_rng_state(ranks[context.rank], data_generator, device)
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


def kept_message(run_dir: Path, epochs_done: int) -> str:
    if epochs_done > 0:
        return f"the checkpoint of epoch {epochs_done} in {run_dir} is kept"
    if (run_dir / CONFIG_NAME).exists():
        return f"no checkpoint was written ({run_dir} holds the config: --resume starts it over)"
    return "nothing was kept"


def go_on_message(run_dir: Path) -> str:
    """How to continue the run in ``run_dir`` (or start it again when it holds nothing)."""
    if (run_dir / CONFIG_NAME).exists():
        return f"continue with `pyrovae train --resume {run_dir}`"
    return "run the command again"


@contextmanager
def saying_what_is_kept(
    run_dir: Path, epochs_done: int, *, figures: bool = False
) -> Iterator[None]:
    """A failed write into the run (disk full) says which checkpoint is kept and how to go on."""
    try:
        yield
    except FileWriteError as err:
        if figures:
            then = f"all {epochs_done} epochs are checkpointed in {run_dir}"
        else:
            then = kept_message(run_dir, epochs_done)
        raise FileWriteError(
            f"{err}; {then}: free some space and {go_on_message(run_dir)}"
        ) from None
