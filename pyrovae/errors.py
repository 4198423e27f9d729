"""User-facing errors.

Everything a user can get wrong (a missing data set, a nonsense option, a
corrupted checkpoint) raises a subclass of :class:`PyrovaeError`. The CLI turns
these into a one-line message and a non-zero exit; anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import numbers


class PyrovaeError(Exception):
    """Base class of every error caused by user input."""


class DataError(PyrovaeError):
    """A data set is missing, malformed, or incompatible with the likelihood."""


class ConfigError(PyrovaeError):
    """An option value is invalid or options contradict each other."""


class ComponentMissingError(ConfigError):
    """A likelihood, guide, prior or network that is not installed (or failed to load)."""


class CheckpointError(PyrovaeError):
    """A checkpoint or run directory is missing, truncated, corrupted or foreign."""


class TrainingError(PyrovaeError):
    """Training cannot go on (the loss diverged); the last good checkpoint is kept."""


class FileWriteError(PyrovaeError):
    """An output file or folder cannot be written (permission, disk full, not a regular file)."""


class RunLockedError(PyrovaeError):
    """Another process holds the run directory's lock (it is training or resuming it)."""


def first_line(err: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (or its type's name), for one-line errors;
    with the next line when the first only announces it (torch's ``Error(s) in loading
    state_dict for VAE:`` says what differs on the line after)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = lines[0] if lines else type(err).__name__
    if text.endswith(":") and len(lines) > 1:
        text = f"{text} {lines[1]}"
    if len(text) <= limit:
        return text
    # Cut at the last sentence that fits, or else the last word, never mid-word.
    cut = text[:limit]
    end = cut.rfind(". ")
    return cut[: end + 1] if end > limit // 3 else cut[: cut.rfind(" ")].rstrip(",;:") + " ..."


def describe_exception(exc: BaseException) -> str:
    """``"TypeName: message"`` on one line, for errors that wrap a library's exception."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def check_count(value: object, name: str, least: int = 1, most: int | None = None) -> int:
    """``value`` as an ``int`` if it is a whole number (numpy's too, not a bool) from
    ``least`` to ``most``; else a one-line :class:`ConfigError` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{name} must be a whole number, got {value!r}")
    count = int(value)
    if count < least or (most is not None and count > most):
        bound = f"at least {least}" if most is None else f"from {least} to {most}"
        raise ConfigError(f"{name} must be {bound}, got {count}")
    return count
