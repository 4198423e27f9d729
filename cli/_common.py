"""Pieces shared by the commands: lazy registry choices and error handling."""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from pyrovae.config import MAX_SEED

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
    """Turn :class:`pyrovae.errors.PyrovaeError` into a one-line message and exit 1."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from pyrovae.errors import PyrovaeError

        try:
            return command(*args, **kwargs)
        except PyrovaeError as err:
            raise click.ClickException(str(err)) from None

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
    type=click.IntRange(min=1),
    default=None,
    expose_value=False,
    callback=_set_threads,
    help="CPU threads for torch's operators [default: torch's choice, one per physical core; "
    "1 per process under torchrun]. On a busy machine fewer threads can be much faster.",
)
