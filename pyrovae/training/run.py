"""Training runs: start one in a new folder, resume one from its folder.

A run folder is claimed and locked before anything is loaded
(:mod:`pyrovae.training.rundir`), so two processes never write one run; the
folder holds the resolved config, the checkpoint after every epoch and the
metrics, so a run can be resumed, exactly, from its folder alone. Errors say
what is kept on disk and how to go on.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from pyrovae.config import RunConfig
from pyrovae.data.dataset import MEMORY, ArrayData, is_image_shape
from pyrovae.data.load import absolute_locations
from pyrovae.errors import (
    CheckpointError,
    ConfigError,
    PyrovaeError,
    TrainingError,
    first_line,
)
from pyrovae.files import (
    BEST_CHECKPOINT_NAME,
    CHECKPOINT_NAME,
    CONFIG_NAME,
    METRICS_NAME,
    RUN_FIGURES,
    TOML_CONFIG_NAME,
    atomic_write_bytes,
)
from pyrovae.model.build import check_model_config
from pyrovae.model.networks.base import Networks
from pyrovae.runtime import is_out_of_memory, resolve_device
from pyrovae.runtime import threads as on_threads
from pyrovae.training import distributed, rundir
from pyrovae.training.checkpoint import load_checkpoint
from pyrovae.training.loggers import CSV_FOLDER, TENSORBOARD_FOLDER, check_available
from pyrovae.training.loop import Finish, Logger, TrainResult, fit, stopped_early
from pyrovae.training.step import check_regularizers


def default_run_dir(config: RunConfig, root: Path = Path("runs")) -> Path:
    """A fresh folder ``runs/<time>-<dataset>-<likelihood>``."""
    dataset = "memory" if config.data.dataset == MEMORY else config.data.dataset
    stem = Path(dataset).stem if "/" in dataset else dataset
    base = root / f"{datetime.now():%Y%m%d-%H%M%S}-{stem}-{config.model.likelihood}"
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def train(
    config: RunConfig,
    out: str | Path | None = None,
    *,
    progress: bool = True,
    log: Logger = print,
    finish: Finish | None = None,
    modules: Networks | None = None,
    source: ArrayData | None = None,
) -> TrainResult:
    """Train a new VAE; write its run folder; return the result.

    Parameters
    ----------
    config
        The run config. It is validated before any data is read or any
        folder is made. A data file or folder and ``data_dir`` are recorded
        as absolute paths (:func:`pyrovae.data.load.absolute_locations`).
    out
        The run folder; default a fresh one under ``runs/``. It must not hold
        a run already (use :func:`resume` for that).
    progress
        Show a progress bar per epoch.
    log
        Where the per-epoch lines go.
    finish
        Called on rank 0 after the last epoch, with the run folder still
        locked (:data:`pyrovae.training.loop.Finish`): the API draws figures there.
    modules
        A caller's own encoder and decoder, for the ``module`` network.
    source
        Data passed from Python (:func:`pyrovae.data.memory.from_python`), used
        instead of ``config.data.dataset`` (which then is ``"<memory>"``).

    Example
    -------
    >>> from pyrovae import RunConfig, train
    >>> result = train(RunConfig(), progress=False)  # digits, Bernoulli, 30 epochs
    >>> result.final["test_elbo"]  # doctest: +SKIP
    """
    check_model_config(config.validate().model)
    check_regularizers(config.train)
    check_available(config.train.logger)
    dataset, data_dir = absolute_locations(config.data.dataset, config.data.data_dir)
    config = replace(config, data=replace(config.data, dataset=dataset, data_dir=data_dir))
    with distributed.session(resolve_device(config.train.device)) as context:
        # Rank 0 creates and locks the folder before the data load, so that a bad
        # --out or a second writer is one line at once; every process learns its name.
        claimed: list[rundir.Claim] = []
        run_dir = context.on_main(lambda: _claim_new(out, config, claimed))
        with _holding(claimed, run_dir, fresh=True), on_threads(config.train.threads):
            return fit(
                config,
                run_dir,
                checkpoint=None,
                progress=progress,
                log=log,
                context=context,
                finish=finish,
                modules=modules,
                source=source,
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
        if not os.fspath(out).strip():  # Path("") is the current folder
            raise ConfigError("--out is an empty path; give the run folder's name")
        claim = rundir.claim(out, create=True)
    if (claim.path / CONFIG_NAME).exists() or (claim.path / CHECKPOINT_NAME).exists():
        claim.release()
        raise ConfigError(
            f"{claim.path} already holds a run; resume it with --resume {claim.path}"
            " or pick another --out"
        )
    kept = [name for name in _written(config) if (claim.path / name).exists()]
    if kept:  # not a run, yet files a run writes: another tool's, or a run's leftovers
        claim.release()
        raise ConfigError(
            f"{claim.path} is not a run folder but holds {', '.join(kept)}, which training "
            "would overwrite; pick another --out or move them"
        )
    claimed.append(claim)
    return claim.path


def _written(config: RunConfig) -> list[str]:
    """What a new run of ``config`` writes in its folder, besides config.json and
    checkpoint.pt: its logger's files only with that logger (a ``logs/`` of the user's
    own, say a batch job's, is no run's)."""
    written = [TOML_CONFIG_NAME, BEST_CHECKPOINT_NAME, METRICS_NAME, *RUN_FIGURES]
    if config.train.logger == "csv":
        written += [f"{CSV_FOLDER}/steps.csv", f"{CSV_FOLDER}/epochs.csv"]
    elif config.train.logger == "tensorboard":
        written.append(TENSORBOARD_FOLDER)  # its event files would join the old ones
    return written


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM, see :func:`sigterm_stops_as_ctrl_c`) during :func:`train` or
    :func:`resume`; the message says what is kept in the run directory and how to go on."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, ``timeout``, a batch scheduler's end of job) within
    :func:`sigterm_stops_as_ctrl_c`."""


@contextmanager
def sigterm_stops_as_ctrl_c() -> Iterator[None]:
    """Within the block, SIGTERM stops training as Ctrl-C does: :class:`Terminated`, then
    one line saying which checkpoint is kept, where the default would end the process
    without a word. For the command line, which owns its process; a library call leaves
    the caller's handlers alone. The previous handler is restored after the block."""
    # Handlers can be set from the main thread only. Under torchrun only rank 0 says what
    # is kept; the others stop without a word (one line, not one per process).
    if threading.current_thread() is not threading.main_thread() or distributed.env_rank() > 0:
        yield
        return

    def terminate(signum: int, frame: object) -> None:
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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
            what = "terminated (SIGTERM)" if isinstance(err, Terminated) else "interrupted"
            raise TrainingInterrupted(stopped_message(run_dir, what)) from None
        # One line, not the allocator's traceback (pyrovae's own errors are one line already).
        if is_out_of_memory(err) and not isinstance(err, PyrovaeError):
            raise TrainingError(
                stopped_message(
                    run_dir,
                    f"out of memory ({first_line(err, 120)}; a smaller --batch-size or "
                    "--particles needs less)",
                )
            ) from None
        raise
    finally:
        for claim in claimed:
            claim.release()


def stopped_message(run_dir: Path, what: str) -> str:
    """``what`` stopped the run in ``run_dir``: what it leaves there, and how to go on."""
    if (run_dir / CHECKPOINT_NAME).exists():
        epoch = _checkpointed_epoch(run_dir)
        kept = "its last checkpoint" if epoch is None else f"the checkpoint of epoch {epoch}"
        return (
            f"{what}; {kept} in {run_dir} is kept: continue with `pyrovae train --resume {run_dir}`"
        )
    if (run_dir / CONFIG_NAME).exists():
        return (
            f"{what} before the first checkpoint; `pyrovae train --resume {run_dir}` "
            "starts the run over from its config.json"
        )
    return f"{what} before training started; nothing was written: run the command again"


def resume(
    run_dir: str | Path,
    *,
    epochs: int | None = None,
    device: str | None = None,
    lr: float | None = None,
    max_time: float | None = None,
    particles: int | None = None,
    progress: bool = True,
    log: Logger = print,
    finish: Finish | None = None,
    source: ArrayData | None = None,
    precision: str | None = None,
    compile: bool | None = None,
    threads: int | None = None,
) -> TrainResult:
    """Continue the run in ``run_dir`` from its last checkpoint (from the start
    when it was stopped before its first checkpoint).

    ``epochs`` raises the total number of epochs (the run's own by default);
    ``device`` moves it to another device; ``lr`` changes Adam's step size
    from here on (e.g. after the loss diverged; config.json records it);
    ``particles`` the objective's sample count from here on (``--particles``:
    e.g. a run trained with IWAE-5 fine-tuned with more; config.json records it);
    ``max_time`` is this call's time budget in seconds (the run's
    ``max_time`` by default; 0: none). ``precision`` and ``compile`` change
    how the steps run from here on (``--precision``, ``--compile``; the
    checkpoint is the same either way). ``threads`` changes the CPU thread
    count the run records (``--threads``; by default the run's own, except in
    one of several processes, which keeps torchrun's one). A run stopped
    early by its patience is not trained further (its missing figures are
    drawn). On CPU a resumed run ends with the same parameters as one that was never
    stopped. A run whose epochs are all done but whose figures are missing
    (stopped while drawing them) gets its figures drawn. ``source`` is the
    data of a run trained on data passed from Python, passed again.

    The run directory is locked while it trains: resuming a run that another
    process is training is refused. Temporary files left by an interrupted
    write are removed.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"no run directory at {run_dir}")
    changes: dict[str, Any] = {"epochs": epochs, "device": device, "lr": lr, "max_time": max_time,
                               "particles": particles, "precision": precision,
                               "compile": compile, "threads": threads}  # fmt: skip
    config = resumed_config(run_dir, **changes)
    check_available(config.train.logger)
    with distributed.session(resolve_device(config.train.device)) as context:
        claimed: list[rundir.Claim] = []
        removed = context.on_main(lambda: _claim_existing(run_dir, claimed))
        count = _thread_count(config, given=threads, several=context.enabled)
        with _holding(claimed, run_dir, fresh=False), on_threads(count):
            if removed:
                log(f"removed temporary files left by an interrupted write: {', '.join(removed)}")
            # Read again under the lock: another process may have written it meanwhile.
            config = resumed_config(run_dir, **changes)
            # A run stopped before its first epoch ended has its config but no
            # checkpoint: it starts over from that config.
            has_checkpoint = (run_dir / CHECKPOINT_NAME).exists()
            if not has_checkpoint:
                _check_nothing_trained(run_dir)
            checkpoint = load_checkpoint(run_dir / CHECKPOINT_NAME) if has_checkpoint else None
            done = int(checkpoint.get("epoch", 0)) if checkpoint is not None else 0
            early = checkpoint is not None and stopped_early(checkpoint.get("history") or [])
            if done >= config.train.epochs or early:
                missing = [name for name in run_figures(config) if not (run_dir / name).exists()]
                if early and not missing:
                    raise ConfigError(
                        f"{run_dir} stopped early after epoch {done}: its validation ELBO had "
                        f"not improved in {config.train.patience} evaluations (--patience)"
                    )
                if checkpoint is None or not missing or (done > config.train.epochs and not early):
                    raise ConfigError(
                        f"{run_dir} has trained {done} epoch{'s' if done != 1 else ''} already; "
                        f"pass --epochs N with N > {done} to train further"
                    )
                log(f"{run_dir} has trained its {done} epochs; drawing its missing figures")
                config = _figures_only_config(run_dir, changes, log)
            with _options_kept_only_if_trained(run_dir, done, main=context.is_main):
                return fit(
                    config,
                    run_dir,
                    checkpoint=checkpoint,
                    progress=progress,
                    log=log,
                    context=context,
                    finish=finish,
                    source=source,
                )


#: What a resume changes only in training steps: a run that only draws its figures
#: does not record them (its config.json would say the run trained with them, or, for
#: a run stopped early, for more epochs than it ever will).
TRAINING_ONLY = ("lr", "particles", "epochs")


def _figures_only_config(run_dir: Path, changes: dict[str, Any], log: Logger) -> RunConfig:
    """The resumed config without :data:`TRAINING_ONLY` changes, saying which were given."""
    given = [name for name in TRAINING_ONLY if changes[name] is not None]
    if given:
        log(f"not recorded, as no epoch is left to train: {', '.join(given)}")
    return resumed_config(run_dir, **{**changes, **dict.fromkeys(TRAINING_ONLY)})


@contextmanager
def _options_kept_only_if_trained(run_dir: Path, done: int, *, main: bool) -> Iterator[None]:
    """config.json and config.toml as they were before a resume that fails (diverges,
    is interrupted) before it checkpoints an epoch: the options it was given (``--lr``,
    ``--particles``, ``--epochs``) trained nothing, and a plain ``--resume`` would
    otherwise take them again."""
    files = (run_dir / CONFIG_NAME, run_dir / TOML_CONFIG_NAME)
    saved = {path: path.read_bytes() for path in files if main and path.is_file()}
    try:
        yield
    except BaseException:
        if saved and (_checkpointed_epoch(run_dir) or 0) <= done:
            try:
                for path, data in saved.items():
                    atomic_write_bytes(path, data)
            except PyrovaeError:  # a full disk: the error that stopped the run says more
                pass
        raise


def _checkpointed_epoch(run_dir: Path) -> int | None:
    """The epoch of the run's last checkpoint; ``None`` without a readable one."""
    try:
        return int(load_checkpoint(run_dir / CHECKPOINT_NAME)["epoch"])
    except (CheckpointError, KeyError, TypeError, ValueError):
        return None


def _check_nothing_trained(run_dir: Path) -> None:
    """A run without its last checkpoint starts over only if nothing says it trained:
    starting over would overwrite a best checkpoint and the metrics of earlier epochs."""
    trained = [
        name
        for name in (BEST_CHECKPOINT_NAME, METRICS_NAME)
        if (run_dir / name).is_file() and (run_dir / name).stat().st_size > 0
    ]
    if trained:
        raise CheckpointError(
            f"{run_dir} has no {CHECKPOINT_NAME}, but its {' and '.join(trained)} say it "
            f"trained: resuming would start over and overwrite them; put {CHECKPOINT_NAME} "
            "back, or train a new run with --out"
        )


def run_figures(config: RunConfig) -> tuple[str, ...]:
    """The figures a finished run has: no image grids where its data are not images."""
    if is_image_shape(config.model.data_shape):
        return RUN_FIGURES
    return tuple(name for name in RUN_FIGURES if name == "loss_curve.png")


def _thread_count(config: RunConfig, *, given: int | None, several: bool) -> int | None:
    """The CPU threads a resumed run runs on: ``given`` (``--threads``), else the
    count the run recorded; but one process of several (torchrun) keeps the one
    thread torchrun gave it (``None``: unchanged), or the recorded count would
    run N times that many threads on one machine."""
    if given is not None or several:
        return given
    return config.train.threads


def resumed_config(
    run_dir: Path,
    *,
    epochs: int | None,
    device: str | None,
    lr: float | None,
    max_time: float | None,
    particles: int | None = None,
    precision: str | None = None,
    compile: bool | None = None,
    threads: int | None = None,
) -> RunConfig:
    """The config of the run in ``run_dir`` with the options a resume may change,
    checked as a new run's is (an error names the config.json)."""
    config = RunConfig.load(run_dir / CONFIG_NAME)
    if threads is not None:
        config.train.threads = threads
    if precision is not None:
        config.train.precision = precision  # type: ignore[assignment]
    if compile is not None:
        config.train.compile = compile
    if max_time is not None:
        config.train.max_time = max_time
    if epochs is not None:
        config.train.epochs = epochs
    if device is not None:
        config.train.device = device  # type: ignore[assignment]
    if lr is not None:
        config.train.lr = lr
    if particles is not None:
        config.train.particles = particles
    try:
        check_model_config(config.validate().model)
        check_regularizers(config.train)
    except ConfigError as err:  # an edited config.json is not a mistyped option
        raise ConfigError(f"{err} (from {run_dir / CONFIG_NAME} and the options given)") from None
    return config


def _claim_existing(run_dir: Path, claimed: list[rundir.Claim]) -> list[str]:
    """Lock an existing run's folder; remove what interrupted writes left; their names."""
    claim = rundir.claim(run_dir, create=False)
    claimed.append(claim)
    return [path.name for path in rundir.clean_stale_temporaries(claim)]
