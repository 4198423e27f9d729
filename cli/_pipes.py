"""Standard output closed under a running command (``pyrovae train | head -1``).

When the reader of a pipe exits, the next write to standard output raises
``BrokenPipeError``: the command would end there, mid-run, with exit status 1
and no word (``train`` after its first line, keeping one epoch of a long run).
:func:`tolerating_closed_stdout` lets the command go on instead, its output sent
to ``/dev/null`` from then on (as Python's documentation advises for SIGPIPE),
with one line on standard error for the commands that run long enough to
wonder why the shell has not returned. Files are written as usual.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO


class _ClosedPipeGuard:
    """``stream`` whose writes and flushes outlive the reader closing it."""

    def __init__(self, stream: TextIO, note: Callable[[], str | None]) -> None:
        self._stream, self._note, self._closed = stream, note, False

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._reader_gone()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._reader_gone()

    def _reader_gone(self) -> None:
        """Point the stream's file descriptor at /dev/null (what it still buffers, and
        Python's flush at exit, go there), and say so once, on standard error (itself
        guarded: with ``2>&1`` it is the same closed pipe)."""
        if self._closed:
            return
        self._closed = True
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, self._stream.fileno())
        os.close(devnull)
        note = self._note()
        if note:
            sys.stderr.write(f"pyrovae: {note}\n")
            sys.stderr.flush()

    def __getattr__(self, name: str) -> Any:  # encoding, isatty, fileno, buffer, ...
        return getattr(self._stream, name)


@contextmanager
def tolerating_closed_stdout(note: Callable[[], str | None]) -> Iterator[None]:
    """Within the block, a closed standard output sends further output to /dev/null
    and prints ``note()`` (if any) on standard error; a closed standard error (``2>&1
    | head``) sends its own to /dev/null too. Only for streams on a real file
    descriptor (not a test's captured output)."""
    stdout, stderr = sys.stdout, sys.stderr
    if _has_descriptor(stderr):
        sys.stderr = _ClosedPipeGuard(stderr, lambda: None)  # type: ignore[assignment]
    if _has_descriptor(stdout):
        sys.stdout = _ClosedPipeGuard(stdout, note)  # type: ignore[assignment]
    try:
        yield
    finally:
        sys.stdout, sys.stderr = stdout, stderr


def _has_descriptor(stream: TextIO) -> bool:
    """Whether ``stream`` writes to a file descriptor of this process."""
    try:
        stream.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    return True
