"""The epoch loop: stochastic variational inference on the VAE's model and guide.

Each step differentiates a Pyro ELBO estimator (``TraceMeanField_ELBO`` by
default) of the model and guide on one minibatch and takes an Adam step
(:mod:`pyrovae.training.step`); after each epoch divergence is checked, and
every ``eval_every`` epochs (and at the last) the test and validation ELBOs are
estimated, the checkpoint (and, on a better validation ELBO, the best
checkpoint) and metrics are written atomically. Where the wall time went
(training steps against the rest) is recorded in each metrics row and logged
at the end, so that the overhead of evaluation and checkpoints is seen.
Launched by ``torchrun`` it trains data-parallel
(:mod:`pyrovae.training.distributed`), with rank 0 writing the run folder.
"""

from __future__ import annotations

import json
import logging
import math
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch.distributions import constraints
from torch.distributions.constraints import Constraint

from pyrovae.config import RunConfig, TrainConfig
from pyrovae.data.dataset import ArrayData, is_image_shape, source_row
from pyrovae.data.missing import data_has_missing
from pyrovae.data.pixels import display_range, display_values, to_unit_float
from pyrovae.data.prepare import (
    check_support,
    elementwise_constraint,
    first_outside,
    prepare_data,
    prepare_source,
)
from pyrovae.data.validation import Held, hold_out_validation
from pyrovae.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    FileWriteError,
    TrainingError,
    first_line,
)
from pyrovae.files import (
    BEST_CHECKPOINT_NAME,
    CHECKPOINT_NAME,
    CONFIG_NAME,
    METRICS_NAME,
    TOML_CONFIG_NAME,
    atomic_write_text,
)
from pyrovae.inference.objectives import (
    make_objective,
)
from pyrovae.model.build import build_vae
from pyrovae.model.contract import check_contract
from pyrovae.model.networks.base import Networks
from pyrovae.model.spec import completed, component_class
from pyrovae.model.vae import VAE
from pyrovae.runtime import (
    describe_threads,
    eval_mode,
    forked_rng,
    module_device,
    resolve_device,
    synchronize,
)
from pyrovae.training import distributed, divergence, labelled
from pyrovae.training.acceleration import accelerate, is_compile_error, release
from pyrovae.training.checkpoint import load_checkpoint, save_checkpoint
from pyrovae.training.ema import WeightAverage
from pyrovae.training.loggers import RunLogger, open_logger
from pyrovae.training.schedules import kl_weight, learning_rate
from pyrovae.training.step import TrainStep, check_free_bits, make_optimizer, train_epoch

_debug = logging.getLogger(__name__).debug

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
    #: Seconds of this call's wall time: ``train`` (training steps), ``other``
    #: (evaluation, checkpoints, logging), ``setup`` (data load, model build), ``wall``.
    timing: dict[str, float] = field(default_factory=dict)

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
    source: ArrayData | None = None,
) -> TrainResult:
    """Train ``config``'s model in ``run_dir`` (resuming from ``checkpoint`` when given).

    ``source`` is data passed from Python (:func:`pyrovae.data.memory.from_python`);
    without it the config's data set is loaded. ``modules`` are a caller's own
    networks. See :func:`pyrovae.training.run.train` for the rest.
    """
    started = time.perf_counter()
    context = context or distributed.Context()
    if not context.is_main:
        log, progress = silent, False
    device = context.device(resolve_device(config.train.device))
    data = load_data(config, device, context, checkpoint=checkpoint, source=source)
    data = labelled.prepare_labels(config, data)  # cvae, m2: the labels and their classes
    binary = component_class(config.model, "likelihood").binary
    if checkpoint is None:
        warn_of_idle_options(config, binary=binary)
    held = hold_out_validation(data, config.data.val_fraction, config.train.seed, binary=binary)
    data = held.data
    torch.manual_seed(config.train.seed)
    data_generator = torch.Generator().manual_seed(config.train.seed)
    vae = build_vae(config.model, device, modules=modules)
    check_data_fits(vae, data, config, held, resumed=checkpoint is not None)
    context.broadcast_parameters(vae)
    training = Training.start(config, run_dir, data, vae, data_generator, context, log, progress)
    training.validation, training.validation_labels = held.validation, held.validation_labels
    history: list[dict[str, Any]] = []
    start_epoch = 0
    if checkpoint is not None:
        history, start_epoch = restore(
            checkpoint, vae, training.optimizer, data_generator, device, context, config, run_dir,
            log, ema=training.step.ema,
        )  # fmt: skip
    # Everything that can fail on bad input has run (on every process): only now
    # write into the run directory (claimed by rank 0 before the data load).
    context.barrier()
    if context.is_main:
        write_start(config, run_dir, history if checkpoint is not None else None, start_epoch)
        if checkpoint is not None:
            repair_best(run_dir, checkpoint, history)
        training.open_logger(start_epoch)
    training.say_where()
    training.clock = Clock(started)
    training.clock.resumed(history)
    try:
        training.run_epochs(start_epoch, history)
    except Exception as error:
        if config.train.compile and is_compile_error(error):
            raise TrainingError(
                f"--compile failed: {first_line(error)}; train without --compile (a run "
                "folder goes on with `pyrovae train --resume DIR --no-compile`)"
            ) from error
        raise
    finally:
        training.close_logger()
        release(vae, training.step.precision)
    timing = training.clock.summary()
    if training.step.ema is not None:  # what the checkpoint holds, and the figures show
        training.step.ema.copy_to(vae)
    vae.eval()
    if context.is_main and finish is not None:
        with saying_what_is_kept(run_dir, history[-1]["epoch"] if history else 0, figures=True):
            figures = finish(vae, data.test, history, run_dir)
        if figures:
            log("wrote " + ", ".join(str(path) for path in figures))
    context.barrier()
    return TrainResult(run_dir=run_dir, config=config, vae=vae, history=history, timing=timing)


def warn_of_idle_options(config: RunConfig, *, binary: bool) -> None:
    """Say which options given to a fresh run do nothing, or less than they seem:
    ``--binarize static`` for a likelihood that is not binary, ``--beta`` and
    ``--kl-warmup`` for an autoencoder (no KL term to weight), and fewer ``--labeled``
    points than m2 has classes (some classes get no labelled example)."""
    idle = []
    if not binary and config.data.binarize == "static":
        idle.append(
            f"--binarize static is for binary likelihoods; likelihood "
            f"{config.model.likelihood} reads the values as they are"
        )
    train, kind = config.train, config.model.kind
    if kind == "ae" and (train.beta != 1.0 or train.kl_warmup):
        idle.append(
            "--beta and --kl-warmup weight the KL term, which an autoencoder (--model ae) "
            "has none of: they change nothing"
        )
    labeled, n_classes = config.data.labeled, config.model.n_classes
    if kind == "m2" and labeled is not None and n_classes and labeled < n_classes:
        idle.append(
            f"--labeled {labeled} is fewer than the {n_classes} classes: "
            f"{n_classes - labeled} classes get no labelled example"
        )
    for text in idle:
        warnings.warn(text, UserWarning, stacklevel=3)


@dataclass
class Clock:
    """Where this call's wall time goes: training steps, and everything else."""

    started: float
    # Read when the Clock is made (through the module, so a test can swap the clock).
    loop_started: float = field(default_factory=lambda: time.perf_counter())
    mark: float = field(default_factory=lambda: time.perf_counter())  # the last row's time
    train: float = 0.0
    epochs: int = 0
    #: Seconds of the evaluations and checkpoints so far, and of the last one.
    evaluations: float = 0.0
    last_evaluation: float = 0.0

    def summary(self) -> dict[str, float]:
        now = time.perf_counter()
        wall, setup = now - self.started, self.loop_started - self.started
        return {"train": self.train, "other": wall - setup - self.train, "setup": setup,
                "wall": wall}  # fmt: skip

    def budget_share(self, budget: float) -> float | None:
        """The share of a time budget of ``budget`` seconds (counted, as ``--max-time``
        is, from the start of the call) that the epochs have used: the time since the
        loop started over what setup left of the budget; ``None`` without a budget or
        with nothing left of it."""
        left = budget - (self.loop_started - self.started)
        if budget <= 0 or left <= 0:
            return None
        return (time.perf_counter() - self.loop_started) / left

    def per_epoch(self) -> float:
        """Mean wall time of this call's epochs so far, their evaluations and checkpoints
        left out (those come at intervals, and :meth:`Training.time_is_up` counts them
        apart)."""
        return (time.perf_counter() - self.loop_started - self.evaluations) / max(1, self.epochs)

    def evaluated(self, seconds: float) -> None:
        """Record an evaluation and checkpoint that took ``seconds``."""
        self.evaluations += seconds
        self.last_evaluation = seconds

    def resumed(self, history: list[dict[str, Any]]) -> None:
        """A resumed run's next evaluation is reckoned as long as its last one was (its
        row's ``overhead_seconds``) until this call times its own, so that ``--max-time``
        keeps room for it from the first epoch on."""
        evaluated = [row for row in history if "test_elbo" in row]
        if evaluated:
            self.last_evaluation = float(evaluated[-1].get("overhead_seconds", 0.0))


def describe_timing(timing: dict[str, float]) -> str:
    """The end-of-training line on where the time went."""
    loop = timing["train"] + timing["other"]
    share = 100 * timing["train"] / loop if loop > 0 else 100.0
    return (
        f"time: {timing['train']:.1f} s in training steps, {share:.1f}% of the "
        f"{loop:.1f} s of the epochs; {timing['other']:.1f} s in evaluation, checkpoints "
        f"and logging; {timing['setup']:.1f} s loading data and building the model"
    )


def load_data(
    config: RunConfig,
    device: torch.device,
    context: distributed.Context,
    *,
    checkpoint: dict[str, Any] | None,
    source: ArrayData | None,
) -> ArrayData:
    """The run's data, prepared; ``config.model.data_shape`` (and, for data passed from
    Python, ``config.data.memory``) filled in from them."""
    binary = component_class(config.model, "likelihood").binary
    # Each machine's first process loads the data first, so that a data set it
    # downloads is on disk before the others look for it (no concurrent downloads).
    first_on_machine = context.local_rank == 0
    if not first_on_machine:
        context.barrier()
    if source is None:
        data = prepare_data(config, device, binary=binary)
    else:
        data = prepare_source(source, config, device, binary=binary)
    if first_on_machine:
        context.barrier()
    if checkpoint is not None and config.model.data_shape != data.data_shape:
        raise CheckpointError(
            f"the run was trained on data points of shape {config.model.data_shape}, "
            f"but {config.data.dataset} now has {data.data_shape}"
        )
    sizes = check_same_sizes(config, data, resumed=checkpoint is not None)
    if source is not None:
        config.data.memory = describe_memory(data)  # its sizes among the rest
    else:
        config.data.sizes = sizes
    config.data.display_range = display_range(data.test)  # for the run's figures
    config.model.data_shape = data.data_shape
    # NaN marks missing values: the model is built to leave them out (config.json records it).
    has_nan = data_has_missing(data)
    config.model.missing = config.model.missing or has_nan
    likelihood = component_class(config.model, "likelihood")
    if config.model.missing and not likelihood.maskable:
        why = (
            f"{data.name} has missing values (NaN)"
            if has_nan
            else "the config sets model.missing (a model for missing values)"
        )
        raise ConfigError(f"{why}, but {likelihood.unmaskable()}")
    # Every option written out, and who provides each component: the run is rebuilt as trained.
    config.model = completed(config.model)
    return data


def check_in_support(
    vae: VAE,
    data: ArrayData,
    config: RunConfig,
    *,
    validation: torch.Tensor | None = None,
    validation_rows: torch.Tensor | None = None,
) -> None:
    """Refuse data outside the support of a non-binary likelihood (a binary one's data
    are binarized, after the check for [0, 1]); ``validation``: the points held out of
    the training set, checked too (``validation_rows``: their rows, for the message)."""
    if component_class(config.model, "likelihood").binary:
        return
    support = _likelihood_support(vae, config)
    if support is not None:
        check_support(data, support, config.model.likelihood, validation, validation_rows)


def _likelihood_support(vae: VAE, config: RunConfig) -> Constraint | None:
    """The support of the VAE's p(x|z), read off the distribution it makes."""
    with eval_mode(vae), torch.no_grad():  # batch norm's statistics stay as built
        return vae.px(torch.zeros(2, config.model.latent_dim, device=module_device(vae))).support


def check_data_fits(
    vae: VAE, data: ArrayData, config: RunConfig, held: Held, *, resumed: bool
) -> None:
    """The model's components against their contract (:func:`check_contract`, on two test
    points), the data (checked to be finite when read) against the likelihood's support
    and, on a fresh run, the prior's :func:`check_prior_range` (a run trained on its data
    resumes on them as it was); ``held``: the validation points and their rows."""
    check_contract(vae, to_unit_float(data.test[:2]))  # real points: a plugin may need them
    validation, rows = held.validation, held.validation_rows
    check_in_support(vae, data, config, validation=validation, validation_rows=rows)
    if not resumed:
        check_prior_range(vae, data, config, validation=validation, validation_rows=rows)


def check_prior_range(
    vae: VAE,
    data: ArrayData,
    config: RunConfig,
    *,
    validation: torch.Tensor | None = None,
    validation_rows: torch.Tensor | None = None,
) -> None:
    """Refuse data outside the interval a prior's data-space parameters lie in (a
    VampPrior's pseudo-inputs in [0, 1]): no pseudo-input could resemble them.
    ``validation``: the points held out of the training set, checked too
    (``validation_rows``: their rows, for the message)."""
    interval = getattr(getattr(vae, "prior", None), "input_range", None)
    if interval is None:
        return
    lo, hi = interval
    if _support_within(vae, config, lo, hi):  # the data were checked against it
        return
    splits = [("training", data.train), ("test", data.test), ("validation", validation)]
    found = first_outside(splits, constraints.interval(lo, hi))
    if found is not None:
        split, first = found
        rows = validation_rows if split == "validation" else data.rows(split)
        raise ConfigError(
            f"prior {config.model.prior} has pseudo-inputs in [{lo:g}, {hi:g}], but the "
            f"{split} set of {data.name} has values outside (first in point {first}"
            f"{source_row(rows, first)}): "
            "choose pseudo-inputs linear (--pseudo-inputs linear), or rescale the data"
        )


def _support_within(vae: VAE, config: RunConfig, lo: float, hi: float) -> bool:
    """Whether the likelihood keeps the data within [lo, hi]: a binary one's values are
    in [0, 1], a continuous Bernoulli's support is [0, 1]."""
    if component_class(config.model, "likelihood").binary:
        return lo <= 0.0 and hi >= 1.0
    support = _likelihood_support(vae, config)
    if support is None:
        return False
    bounds = elementwise_constraint(support)
    low, high = getattr(bounds, "lower_bound", None), getattr(bounds, "upper_bound", None)
    if not (isinstance(low, (int, float)) and isinstance(high, (int, float))):
        return False
    return lo <= low and high <= hi


def write_start(
    config: RunConfig, run_dir: Path, history: list[dict[str, Any]] | None, epochs_done: int
) -> None:
    """The run's config, and on a resumed run its metrics cut back to the checkpoint."""
    with saying_what_is_kept(run_dir, epochs_done):
        config.save(run_dir / CONFIG_NAME)
        config.save_toml(run_dir / TOML_CONFIG_NAME)
        if history is not None:
            write_metrics(run_dir, history)  # drop lines of epochs after the checkpoint


def repair_best(run_dir: Path, checkpoint: dict[str, Any], history: list[dict[str, Any]]) -> None:
    """Write the best checkpoint from the last when the last's epoch is the best and the
    best file is of another epoch (or none): its write, after the last's, failed, and
    the resumed run would not write it again unless a later epoch did better."""
    if not any("val_elbo" in row for row in history):
        return
    epoch = best_row(history)["epoch"]
    path = run_dir / BEST_CHECKPOINT_NAME
    if epoch != checkpoint["epoch"]:
        return
    try:
        if path.is_file() and load_checkpoint(path).get("epoch") == epoch:
            return
    except CheckpointError:
        pass  # unreadable: written again below
    best = {"epoch": epoch, "model": checkpoint["model"], "history": history}
    if "train_model" in checkpoint:
        best["train_model"] = checkpoint["train_model"]
    with saying_what_is_kept(run_dir, epoch):
        save_checkpoint(path, best)


def describe_memory(data: ArrayData) -> dict[str, Any]:
    """What data passed from Python were, as ``config.json`` records it."""
    return {
        "shape": list(data.data_shape),
        "dtype": str(data.train.dtype).removeprefix("torch."),
        "n_train": int(data.train.shape[0]),
        "n_test": int(data.test.shape[0]),
    }


def stopped_early(history: list[dict[str, Any]]) -> bool:
    """Whether the run's last epoch ended it by ``--patience`` (it trains no further)."""
    return bool(history) and history[-1].get("stopped") == "patience"


def check_same_sizes(config: RunConfig, data: ArrayData, *, resumed: bool) -> list[int]:
    """The sizes of the training and test splits, ``[n_train, n_test]``, which a resumed
    run must find again as far as its config recorded them (``data.memory`` for data
    passed from Python, ``data.sizes`` for files; a run recorded before either is not
    checked): other points would be trained and scored on without a word."""
    now = [int(data.train.shape[0]), int(data.test.shape[0])]
    memory = config.data.memory
    recorded = config.data.sizes if memory is None else [memory["n_train"], memory["n_test"]]
    if not resumed or recorded is None or list(recorded) == now:
        return now
    if memory is not None:
        raise DataError(
            f"the run was trained on {recorded[0]} + {recorded[1]} points "
            f"(train + test) but got {now[0]} + {now[1]}: pass the same "
            "data= (and test_data= or test_fraction=) as when it was trained"
        )
    raise DataError(
        f"{config.data.dataset} has changed since the run was trained: it had "
        f"{recorded[0]} + {recorded[1]} points (train + test), now {now[0]} + {now[1]}; "
        "train a new run on these data, or put the old data back"
    )


@dataclass
class Training:
    """What every epoch uses: the run, its data, the model and the step, the divergence limit."""

    config: RunConfig
    run_dir: Path
    data: ArrayData
    vae: VAE
    optimizer: torch.optim.Optimizer
    step: TrainStep
    data_generator: torch.Generator
    context: distributed.Context
    binarize: bool
    loss_limit: float
    log: Logger
    progress: bool
    #: The last epoch's mean sparsity KL per data point (with ``--sparsity``).
    sparsity_kl: float | None = None
    #: The validation points (``--val-fraction``), in memory; ``None``: no validation split.
    validation: torch.Tensor | None = None
    validation_labels: torch.Tensor | None = None
    logger: RunLogger | None = None
    clock: Clock = field(default_factory=lambda: Clock(time.perf_counter()))

    @classmethod
    def start(
        cls,
        config: RunConfig,
        run_dir: Path,
        data: ArrayData,
        vae: VAE,
        data_generator: torch.Generator,
        context: distributed.Context,
        log: Logger,
        progress: bool,
    ) -> Training:
        """The objective, the divergence limit, the optimizer and the step, in the order
        that keeps the random streams of earlier versions."""
        objective = make_objective(config.train)
        binarize = (
            component_class(config.model, "likelihood").binary and config.data.binarize == "dynamic"
        )
        # Of the model as built: the same on a fresh and a resumed run, and on every process.
        untrained = labelled.untrained_loss(config, vae, objective, data, binarize=binarize)
        loss_limit = context.broadcast(divergence.loss_limit(untrained, data.data_shape))
        if context.rank > 0:  # distinct draws per process; rank 0 keeps the single-process stream
            torch.manual_seed(distributed.rank_seed(config.train.seed, context.rank))
        optimizer = make_optimizer(vae.parameters(), lr=config.train.lr)
        gradient_hook = context.all_reduce_gradients if context.enabled else None
        check_free_bits(vae, config.train.free_bits)
        step = labelled.make_step(
            config, vae, objective, optimizer, data, binarize=binarize, gradient_hook=gradient_hook
        )
        if config.train.ema:
            step.ema = WeightAverage(vae, config.train.ema)
        step.precision = accelerate(vae, config.train.precision, config.train.compile)
        return cls(config, run_dir, data, vae, optimizer, step, data_generator, context,
                   binarize, loss_limit, log, progress)  # fmt: skip

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.data.train.shape[0] / self.config.train.batch_size)

    def say_where(self) -> None:
        """The run's log lines on where it trains and how it reads its data."""
        device, data = self.vae_device, self.data
        self.log(f"run directory: {self.run_dir} (device {device}, {describe_threads()})")
        held = "" if self.validation is None else f", {self.validation.shape[0]} validation"
        self.log(
            f"data: {data.name}, {data.train.shape[0]} training{held} and {data.test.shape[0]} "
            f"test points of shape {data.data_shape}, {data.reading}"
        )
        if self.context.enabled:
            self.log(
                f"data-parallel over {self.context.world_size} processes, "
                f"global batch {self.config.train.batch_size}"
            )

    @property
    def vae_device(self) -> torch.device:
        return next(self.vae.parameters()).device

    def beta(self, epoch: int, i: int) -> float:
        """The KL weight at step ``i`` of epoch ``epoch`` (0-based)."""
        return kl_weight(self.config, epoch * self.steps_per_epoch + i, self.steps_per_epoch)

    def run_epochs(self, start_epoch: int, history: list[dict[str, Any]]) -> None:
        """Train from epoch ``start_epoch`` (0-based) on, appending rows to ``history``,
        until the last epoch, the time budget or the patience ends it."""
        if stopped_early(history):
            return  # stopped early: a resumed run draws its figures and ends
        for epoch in range(start_epoch, self.config.train.epochs):
            row = self.epoch(epoch, history)
            history.append(row)
            stopped = row.get("stopped")
            if stopped == "time":
                self.log(
                    f"stopped after epoch {row['epoch']}: the next would overrun --max-time "
                    f"{self.config.train.max_time:g} s; the checkpoint is kept: continue with "
                    f"`pyrovae train --resume {self.run_dir}`"
                )
            elif stopped == "patience":
                best = best_row(history)
                self.log(
                    f"stopped early after epoch {row['epoch']}: no better validation ELBO in "
                    f"{self.config.train.patience} evaluations; the best was "
                    f"{best['val_elbo']:.3f} after epoch {best['epoch']}"
                )
            if stopped:
                break
        if history and self.clock.train > 0 and self.context.is_main:  # epochs of this call
            self.log(describe_timing(self.clock.summary()))

    def epoch(self, epoch: int, history: list[dict[str, Any]]) -> dict[str, Any]:
        """Train epoch ``epoch`` (0-based) and check it; evaluate and checkpoint when due;
        its metrics row."""
        train = self.config.train
        time_share = None
        if train.lr_schedule == "cosine" and train.max_time > 0:
            # Each process has its own clock: every one takes rank 0's share, so that
            # data-parallel replicas step with the same learning rate.
            time_share = self.context.broadcast(self.clock.budget_share(train.max_time))
        lr = learning_rate(train, epoch, history, time_share)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        started = time.perf_counter()
        train_loss = self.train_loss(epoch)
        synchronize(self.vae_device)
        seconds = time.perf_counter() - started
        self.clock.train += seconds
        self.clock.epochs += 1
        if divergence.diverged(train_loss, self.loss_limit):
            what = divergence.describe(train_loss, self.loss_limit, epoch + 1)
            raise self.divergence_error(what, history)
        context = self.context
        if not context.is_main:
            context.all_gather(rng_state(self.data_generator, self.vae_device))
            return cast(dict[str, Any], context.broadcast(None))  # rank 0's row
        row = self.metrics_row(epoch, train_loss, seconds, lr)
        stop = self.time_is_up(epoch)
        scheduled = (epoch + 1) % self.config.train.eval_every == 0 or epoch + 1 == self.epochs
        evaluation_started = time.perf_counter()
        if stop or scheduled:
            row.update(self.evaluate_checked(epoch, history))
            if not scheduled:
                # Evaluated only because the time is up: --patience and plateau skip it,
                # so that the resumed run counts the evaluations an uninterrupted one has.
                row["off_schedule"] = True
            if self.out_of_patience([*history, row]):
                stop = "patience"
        if stop:
            row["stopped"] = stop
        now = time.perf_counter()
        row["overhead_seconds"] = now - self.clock.mark - seconds
        self.clock.mark = now
        # The state the next epoch starts from (the evaluation drew from a side stream).
        rng_states = context.all_gather(rng_state(self.data_generator, self.vae_device))
        row = context.broadcast(row)
        rows = [*history, row]
        if self.logger is not None:
            self.logger.epoch((epoch + 1) * self.steps_per_epoch, row)
        if "test_elbo" in row:
            self.save(epoch, rows, rng_states)
            self.clock.evaluated(time.perf_counter() - evaluation_started)
        self.log_row(row)
        return row

    def evaluate_checked(self, epoch: int, history: list[dict[str, Any]]) -> dict[str, Any]:
        """:meth:`evaluate` with the averaged weights; outputs sent to inf or nan by the
        epoch's last steps are divergence, said in one line."""
        with self.averaged():
            try:
                return self.evaluate()
            except ValueError as error:
                # Pyro's validation: a distribution's parameters are inf or nan. The
                # epoch's loss was finite, but its last steps sent the outputs there.
                # Any other ValueError is not divergence and goes on as it is.
                invalid = divergence.invalid_parameter(error)
                if invalid is None:
                    raise
                what = (
                    f"the model's outputs became invalid in epoch {epoch + 1} "
                    f"({invalid}): training diverged"
                )
                raise self.divergence_error(what, history) from error

    def divergence_error(self, what: str, history: list[dict[str, Any]]) -> TrainingError:
        """The one-line error for a run that diverged: ``what`` happened, which checkpoint
        is kept, and the command that resumes with a lower learning rate."""
        return TrainingError(
            f"{what}; {kept_message(self.run_dir, last_checkpointed(history))}"
            f"; lower the learning rate, e.g. `pyrovae train --resume {self.run_dir} "
            f"--lr {min(self.config.train.lr / 10, TrainConfig.lr):.3g}`"
        )

    @property
    def epochs(self) -> int:
        return self.config.train.epochs

    def time_is_up(self, epoch: int) -> str | None:
        """``"time"`` when another epoch would overrun ``--max-time`` (counted from the
        start of this call), else ``None``. Called after epoch ``epoch``'s training
        steps: another epoch costs its steps, and the evaluation and checkpoint still
        ahead, this epoch's when the schedule evaluates it and the one the run ends
        with, each as long as the last one."""
        budget = self.config.train.max_time
        if not budget or epoch + 1 >= self.epochs:
            return None
        elapsed = time.perf_counter() - self.clock.started
        due = (epoch + 1) % self.config.train.eval_every == 0
        evaluation = self.clock.last_evaluation or self.evaluation_guess()
        ahead = self.clock.per_epoch() + evaluation * (2 if due else 1)
        return "time" if elapsed + ahead > budget else None

    def evaluation_guess(self) -> float:
        """Before any evaluation was timed: an epoch's time per point of this process's
        shard, times the points an evaluation scores (test and validation); it draws
        several codes per point without a backward pass, so is of the order of that."""
        size = self.config.train.eval_size or None
        points = self.data.test[:size].shape[0]
        if self.validation is not None:
            points += self.validation[:size].shape[0]
        # An epoch's time is this process's, over its shard; evaluation runs on rank 0 alone.
        shard = math.ceil(self.data.train.shape[0] / self.context.world_size)
        return self.clock.per_epoch() * points / max(1, shard)

    def averaged(self) -> AbstractContextManager[None]:
        """The model holds the moving average of its weights inside (with ``--ema``)."""
        ema = self.step.ema
        return nullcontext() if ema is None else ema.swapped(self.vae)

    def out_of_patience(self, history: list[dict[str, Any]]) -> bool:
        return out_of_patience(history, self.config.train.patience)

    def evaluate(self) -> dict[str, Any]:
        """The test (and validation) figures of the model now, on ``eval_size`` points;
        drawn from a side stream, as :meth:`log_images` is: the test ELBO draws as many
        codes as its standard error needs, which depends on the weights scored, and
        from the training's stream would shift every later batch."""
        with forked_rng(self.vae_device):
            return self._evaluate()

    def _evaluate(self) -> dict[str, Any]:
        size = self.config.train.eval_size or None
        test_labels = None if self.data.test_labels is None else self.data.test_labels[:size]
        test = labelled.evaluate_test(self.config, self.vae, self.data.test[:size], test_labels)
        figures = {
            "test_elbo": test["elbo"],
            "test_recon": test["recon"],
            "test_kl": test["kl"],
            "test_elbo_mc_stderr": test["elbo_mc_stderr"],
            "test_elbo_draws": test["draws"],
            "test_points": int(self.data.test[:size].shape[0]),
            **labelled.extra_metrics(test),
        }
        if self.validation is not None:
            labels = None if self.validation_labels is None else self.validation_labels[:size]
            val = labelled.evaluate_test(self.config, self.vae, self.validation[:size], labels)
            figures |= {"val_elbo": val["elbo"], "val_elbo_mc_stderr": val["elbo_mc_stderr"]}
        return figures

    def train_loss(self, epoch: int) -> float:
        """One pass over the training set; the mean loss per data point over all processes."""
        from tqdm.auto import tqdm

        self.vae.train()
        n_train, batch_size = self.data.train.shape[0], self.config.train.batch_size
        world_size = self.context.world_size
        # The same permutation on every process (same generator state); each takes its shard.
        order = torch.randperm(n_train, generator=self.data_generator)
        bar = tqdm(
            range(self.steps_per_epoch),
            desc=f"epoch {epoch + 1}/{self.config.train.epochs}",
            disable=None if self.progress else True,
            leave=False,
            unit="batch",
        )

        logger, debugging = self.logger, logging.getLogger(__name__).isEnabledFor(logging.DEBUG)

        def show_loss(i: int, total: torch.Tensor) -> None:
            if bar.disable and logger is None and not debugging:
                return  # reading the loss is a host synchronization
            seen = min(n_train, (i + 1) * batch_size) / world_size
            loss = total.item() / seen
            if not bar.disable:
                bar.set_postfix(loss=f"{loss:.2f}")
            if logger is not None:
                logger.step(epoch * self.steps_per_epoch + i + 1, epoch + 1, loss)
            _debug(f"epoch {epoch + 1} step {i + 1}: loss {loss:.3f}")

        total = train_epoch(
            self.step,
            self.data.train,
            order if self.data.streamed else order.to(self.vae_device),
            batch_size,
            binarize=self.binarize,
            beta=lambda i: self.beta(epoch, i),
            shard=(self.context.rank, world_size),
            steps=bar,
            on_log=show_loss,
        )
        bar.close()
        sparsity = self.step.take_sparsity()
        if sparsity is not None:
            self.sparsity_kl = self.context.sum(sparsity).item() / n_train
        loss = self.context.sum(total).item() / n_train
        if self.logger is not None:  # the epoch's last step, however short the epoch
            self.logger.step((epoch + 1) * self.steps_per_epoch, epoch + 1, loss)
        return loss

    def metrics_row(
        self, epoch: int, train_loss: float, seconds: float, lr: float
    ) -> dict[str, Any]:
        # The sparsity penalty is not part of the ELBO: it gets its own column.
        extra = {} if self.sparsity_kl is None else {"train_sparsity_kl": self.sparsity_kl}
        return {
            "epoch": epoch + 1,
            "train_elbo": -train_loss,
            **extra,
            "beta": self.beta(epoch, self.steps_per_epoch - 1),  # the weight it ended at
            "lr": lr,
            "images_per_s": self.data.train.shape[0] / seconds,
            "seconds": seconds,
        }

    def save(self, epoch: int, history: list[dict[str, Any]], rng_states: list[Any]) -> None:
        """The checkpoint (the best one too, on a better validation ELBO), the metrics and
        the logger's files after epoch ``epoch`` (0-based), atomically."""
        started = time.perf_counter()
        state = {
            "epoch": epoch + 1,
            "model": self.vae.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": rng_states[0],
            "history": history,
            "lr": self.config.train.lr,  # the step size before any schedule, for --resume
            "particles": self.config.train.particles,  # to say when --resume changes it
        }
        ema = self.step.ema
        if ema is not None:
            # "model" is what sample, evaluate and diagnose load: the averaged weights;
            # the weights being trained go on from "train_model" on --resume.
            state |= {"model": ema.state_dict(self.vae), "train_model": state["model"],
                      "ema_updates": ema.updates}  # fmt: skip
        if self.context.enabled:
            state["rng_ranks"] = rng_states
        done = last_checkpointed(history[:-1])
        with saying_what_is_kept(self.run_dir, done):
            save_checkpoint(self.run_dir / CHECKPOINT_NAME, state)
        # The best after the last: a failed write leaves a best that is older, and in
        # the history the run resumes from, never one of an epoch it no longer has.
        with saying_what_is_kept(self.run_dir, epoch + 1):
            if "val_elbo" in history[-1] and best_row(history) is history[-1]:
                best = {"epoch": epoch + 1, "model": state["model"], "history": history}
                if "train_model" in state:  # for `evaluate --weights trained`
                    best["train_model"] = state["train_model"]
                save_checkpoint(self.run_dir / BEST_CHECKPOINT_NAME, best)
            write_metrics(self.run_dir, history)
            if self.logger is not None:
                with self.averaged():
                    self.log_images(epoch)
                self.logger.flush()
        seconds = time.perf_counter() - started
        _debug(f"checkpoint and metrics of epoch {epoch + 1}: {seconds:.2f} s")

    def open_logger(self, epochs_done: int) -> None:
        self.logger = open_logger(self.config.train.logger, self.run_dir, epochs_done=epochs_done,
                                  step=epochs_done * self.steps_per_epoch)  # fmt: skip

    def close_logger(self) -> None:
        if self.logger is not None:
            self.logger.close()

    def log_images(self, epoch: int) -> None:
        """Grids of samples and of test images over their reconstructions, to the logger;
        drawn from a side stream, so that logging does not change the run."""
        from torchvision.utils import make_grid

        assert self.logger is not None
        step = (epoch + 1) * self.steps_per_epoch
        if not is_image_shape(self.data.data_shape):
            return
        with forked_rng(self.vae_device), eval_mode(self.vae), torch.no_grad():
            shown = self.config.data.display_range  # as the figures draw them
            samples = display_values(self.vae.sample(64), shown)
            x = to_unit_float(self.data.test[:8])
            pairs = display_values(torch.cat([x, self.vae.reconstruct(x)]), shown)
        self.logger.images(step, epoch + 1, "samples", make_grid(samples, nrow=8))
        pairs = make_grid(pairs, nrow=8)
        self.logger.images(step, epoch + 1, "reconstructions", pairs)

    def log_row(self, row: dict[str, Any]) -> None:
        beta_note = "" if row["beta"] == 1.0 else f" (beta {row['beta']:.3g})"
        line = (
            f"epoch {row['epoch']:>3}/{self.config.train.epochs}  "
            f"train ELBO {row['train_elbo']:9.3f}{beta_note}"
        )
        if "val_elbo" in row:
            line += f"  val ELBO {row['val_elbo']:9.3f} ± {row['val_elbo_mc_stderr']:.3f}"
        if "test_elbo" in row:
            line += (
                f"  test ELBO {row['test_elbo']:9.3f} ± {row['test_elbo_mc_stderr']:.3f}"
                f"  recon {row['test_recon']:9.3f}  KL {row['test_kl']:7.3f}"
            )
        sparsity = row.get("train_sparsity_kl")
        if sparsity is not None:
            line += f"  sparsity KL {sparsity:.3f}"
        self.log(line + f"  {row['images_per_s']:8.0f} img/s" + labelled.accuracy_note(row))
        _debug(
            f"epoch {row['epoch']}: lr {row['lr']:.3g}, {row['seconds']:.2f} s in training "
            f"steps, {row['overhead_seconds']:.2f} s besides"
        )


def out_of_patience(history: list[dict[str, Any]], patience: int) -> bool:
    """Whether ``patience`` evaluations have passed without a better validation ELBO
    (0: never). Evaluations off the ``--eval-every`` schedule (made because
    ``--max-time`` stopped the run there) do not count."""
    if not patience or "val_elbo" not in history[-1] or history[-1].get("off_schedule"):
        return False
    values = [
        row["val_elbo"] for row in history if "val_elbo" in row and not row.get("off_schedule")
    ]
    best = max(range(len(values)), key=values.__getitem__)
    return len(values) - 1 - best >= patience


def best_row(history: list[dict[str, Any]]) -> dict[str, Any]:
    """The (first) row with the highest validation ELBO among the scheduled evaluations
    (one made only because ``--max-time`` stopped the run there is not one an
    uninterrupted run makes), or among all when none is scheduled yet."""
    validated = [row for row in history if "val_elbo" in row]
    scheduled = [row for row in validated if not row.get("off_schedule")]
    return max(scheduled or validated, key=lambda row: row["val_elbo"])


def last_checkpointed(history: list[dict[str, Any]]) -> int:
    """The epoch of the last checkpoint before ``history`` goes on: the last evaluated row."""
    return next((row["epoch"] for row in reversed(history) if "test_elbo" in row), 0)


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
    *,
    ema: WeightAverage | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """Load the checkpoint's model, optimizer and RNG states (and the weight average);
    its history and epoch.

    The learning rate is the config's (``resume --lr`` or an edited config.json),
    not the one saved with the optimizer's state.
    """
    try:
        vae.load_state_dict(checkpoint.get("train_model", checkpoint["model"]))
        if ema is not None:
            ema.load(checkpoint["model"], int(checkpoint.get("ema_updates", 0)))
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
    # The step size the run had before its schedule (older checkpoints lack it: the
    # optimizer's is that only without a schedule), to say when --lr changed it.
    saved_lr = checkpoint.get("lr")
    if saved_lr is None and config.train.lr_schedule == "constant":
        saved_lr = optimizer.param_groups[0]["lr"]
    for group in optimizer.param_groups:
        group["lr"] = config.train.lr
    if epoch < config.train.epochs and not stopped_early(history):
        changed = saved_lr is not None and saved_lr != config.train.lr
        note = f", lr {saved_lr:g} -> {config.train.lr:g}" if changed else ""
        if changed and config.train.lr_schedule != "constant":  # not the rate of this epoch
            note += f" as the {config.train.lr_schedule} schedule's base rate"
        particles = checkpoint.get("particles", config.train.particles)
        if particles != config.train.particles:
            note += f", particles {particles} -> {config.train.particles}"
        log(f"resuming {run_dir} after epoch {epoch} of {config.train.epochs}{note}")
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
