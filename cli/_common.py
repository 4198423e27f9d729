"""Pieces shared by the commands: lazy registry choices, error handling, logging."""

from __future__ import annotations

import functools
import importlib
import logging
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from pyrovae.config import MAX_SEED, MAX_THREADS

F = TypeVar("F", bound=Callable[..., Any])


class RegistryChoice(click.Choice):
    """A ``click.Choice`` over the names of a registry, read on first use.

    ``pyrovae --help`` then needs no torch import; ``pyrovae train --help``
    lists whatever the registry holds, including entries added later (the
    names are read again on every use, not cached).
    """

    def __init__(self, registry: str) -> None:
        self._registry = registry  # "module:ATTRIBUTE"
        super().__init__((), case_sensitive=True)

    @property  # type: ignore[override]
    def choices(self) -> Sequence[str]:
        module, attribute = self._registry.split(":")
        names: Sequence[str] = getattr(importlib.import_module(module), attribute).names()
        return names

    @choices.setter
    def choices(self, value: Sequence[str]) -> None:  # click's __init__ assigns it
        pass


def user_errors(command: F) -> F:
    """Turn :class:`pyrovae.errors.PyrovaeError`, and running out of memory, into a
    one-line message and exit 1; Python's warnings are one line each
    (:func:`_show_warning`) while the command runs, and go to the handler before it
    again after (the CLI may run in a Python session)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from pyrovae.errors import PyrovaeError, first_line
        from pyrovae.runtime import is_out_of_memory

        try:
            with warnings.catch_warnings():  # restores the filters and the handler
                warnings.showwarning = _show_warning
                return command(*args, **kwargs)
        except PyrovaeError as err:
            raise click.ClickException(str(err)) from None
        except (RuntimeError, MemoryError) as err:
            if not is_out_of_memory(err):
                raise
            name = f"pyrovae {click.get_current_context().info_name}"
            raise click.ClickException(
                f"{name} ran out of memory ({first_line(err, 120)}): ask for fewer images "
                "or draws at a time, or run it where more memory is free"
            ) from None

    return wrapper  # type: ignore[return-value]


def parse_sizes(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    """``"512,256"`` -> ``(512, 256)``."""
    if value is None:
        return None
    try:
        sizes = tuple(int(part) for part in value.replace(" ", "").split(",") if part)
    except ValueError:
        raise click.BadParameter(
            f"expected layer sizes like 400 or 512,256, got {value!r}"
        ) from None
    if not sizes or min(sizes) < 1:
        raise click.BadParameter(
            f"expected positive layer sizes like 400 or 512,256, got {value!r}"
        )
    return sizes


run_option = click.option(
    "--run",
    "run_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Run directory (default: the most recent one under runs/).",
)
#: ``--checkpoint``: which of a run's checkpoints to use.
checkpoint_option = click.option(
    "--checkpoint",
    type=click.Choice(["best", "last"]),
    default="best",
    show_default=True,
    help="best: the epoch with the best validation ELBO (runs trained with --val-fraction; "
    "the last checkpoint otherwise); last: the last checkpoint. The output says which.",
)
#: ``--weights``: a run trained with ``--ema`` holds the average and the trained weights.
weights_option = click.option(
    "--weights",
    type=click.Choice(["average", "trained"]),
    default="average",
    show_default=True,
    help="For a run trained with --ema: average uses the moving average of its weights, "
    "trained the weights the optimizer left (the same training without its average). "
    "A run without an EMA has only the trained ones.",
)
#: Seeds go to torch, numpy and Python's ``random``; numpy's legacy seeding
#: takes at most 32 bits (MAX_SEED, shared with ``train --seed``).
seed_option = click.option(
    "--seed",
    type=click.IntRange(0, MAX_SEED),
    default=None,
    help=f"Seed for the random draws (0 to {MAX_SEED}).",
)
progress_option = click.option(
    "--progress/--no-progress", default=True, help="Show a progress bar for long steps."
)
device_option = click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="auto takes CUDA when present.",
)


def image_path(value: str) -> Path:
    """Check, before any work, that an image grid can be written at ``value``.

    The suffix must name a format the grid writer knows, the folder is created
    if missing, and a device, a folder or an unwritable file is refused
    (:func:`pyrovae.files.check_output_file`).
    """
    from pyrovae.files import check_output_file
    from pyrovae.reports.figures import IMAGE_FORMATS

    return check_output_file(value, suffixes=tuple(IMAGE_FORMATS))


def _set_threads(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
    """Apply ``--threads`` as soon as it is parsed, before the command's work."""
    if value is not None:
        from pyrovae.runtime import set_threads

        set_threads(value)
    ctx.meta["pyrovae.threads"] = value
    return value


#: ``--threads N``: torch's CPU threads for this command (applied while parsing,
#: so a command only adds the decorator; its value is in ``ctx.meta["pyrovae.threads"]``).
threads_option = click.option(
    "--threads",
    type=click.IntRange(1, MAX_THREADS),
    default=None,
    expose_value=False,
    callback=_set_threads,
    help="CPU threads for torch's operators [default: torch's choice, one per physical core; "
    "1 per process under torchrun]. On a busy machine fewer threads can be much faster. "
    "A training run records it, and --resume keeps it.",
)


#: The logger every message of pyrovae goes through (``pyrovae.training.loop`` and the
#: rest are its children).
LOGGER_NAME = "pyrovae"


class _EchoHandler(logging.Handler):
    """Log records as lines through ``click.echo``: progress on stdout, warnings and
    errors on stderr (resolved at each record, so click's test runner sees them)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
        except Exception:  # logging's own convention: report, never raise
            self.handleError(record)
            return
        warning = record.levelno >= logging.WARNING
        click.echo(f"{record.levelname.lower()}: {message}" if warning else message, err=warning)


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    """Python's warnings as one ``warning:`` line of the ``pyrovae`` logger, not the
    default's file, line number and source line (shown with ``--verbose``); a warning
    other than a plain UserWarning names its kind."""
    logger = logging.getLogger(LOGGER_NAME)
    text = " ".join(str(message).split())
    kind = "" if category is UserWarning else category.__name__
    if logger.isEnabledFor(logging.DEBUG):
        kind = f"{kind or category.__name__} at {filename}:{lineno}"
    logger.warning(f"{text} ({kind})" if kind else text)


def setup_logging(level: int) -> logging.Logger:
    """Send the ``pyrovae`` logger's records of ``level`` and above to the terminal."""
    logger = logging.getLogger(LOGGER_NAME)
    for handler in [h for h in logger.handlers if isinstance(h, _EchoHandler)]:
        logger.removeHandler(handler)
    logger.addHandler(_EchoHandler())
    logger.setLevel(level)
    return logger


def _set_verbosity(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    ctx.meta[f"pyrovae.{param.name}"] = value
    quiet, verbose = ctx.meta.get("pyrovae.quiet"), ctx.meta.get("pyrovae.verbose")
    if quiet and verbose:
        raise click.UsageError("give --quiet or --verbose, not both")
    setup_logging(logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO)
    return value


def verbosity_options(command: F) -> F:
    """``--quiet`` / ``--verbose``: how much a command says, through Python's ``logging``.

    Messages go to the ``pyrovae`` logger (:data:`LOGGER_NAME`): progress at
    INFO (shown by default), details at DEBUG (``--verbose``); ``--quiet``
    shows only warnings and errors (and turns progress bars off where the
    command asks :func:`quiet`). Applied while parsing, so a command only
    adds the decorator.
    """
    for name, help_text in (
        ("verbose", "Also show details (timings, per-step losses): logging level DEBUG."),
        ("quiet", "Show only warnings and errors (and no progress bars)."),
    ):
        command = click.option(
            f"--{name}",
            f"-{name[0]}",
            name,
            is_flag=True,
            default=False,
            expose_value=False,
            is_eager=True,
            callback=_set_verbosity,
            help=help_text,
        )(command)
    return command


def quiet() -> bool:
    """Whether ``--quiet`` silenced the ``pyrovae`` logger's progress messages."""
    return not logging.getLogger(LOGGER_NAME).isEnabledFor(logging.INFO)
