"""Run directories: claimed (created and locked) before any long work, by one writer at a time.

``pyrovae train`` claims its run directory before it reads the data: the
folder is created and checked for writing (so ``--out /proc/x``, a path under
a regular file or a read-only folder is one line at once, not after the data
load) and locked with :class:`pyrovae.files.RunLock`. The lock is held until
training ends, so a second ``train --out SAME`` or a ``train --resume`` of a
live run gets a one-line error naming the holder instead of writing the same
files. The kernel drops the lock when its holder dies (even by ``kill -9``),
so a lock is never stale.

A fresh run that fails before it has become a run (bad input found while the
data load and model build run, Ctrl-C in that time) :meth:`Claim.discard`\\ s
what it created, so no empty run directory is left behind.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from pyrovae.errors import FileWriteError
from pyrovae.files import LOCK_NAME, RunLock, check_output_folder, remove_stale_temporaries


@dataclass
class Claim:
    """A locked run directory and the folders the claim created (deepest first)."""

    path: Path
    lock: RunLock
    created: list[Path] = field(default_factory=list)

    def release(self) -> None:
        """Remove the lock file and unlock the folder (idempotent).

        The file is removed while still locked: a process that opened it
        meanwhile finds, once it holds it, that the folder's lock file is no
        longer the one it locked, and locks the new one
        (:class:`~pyrovae.files.RunLock` checks). A killed holder leaves the
        file, unlocked.
        """
        if self.lock.held:
            (self.path / LOCK_NAME).unlink(missing_ok=True)
        self.lock.release()

    def discard(self) -> None:
        """Release the folder and remove the folders this claim created.

        A folder that holds anything else by now is left as it is.
        """
        self.release()
        for folder in self.created:
            try:
                folder.rmdir()
            except OSError:
                break  # not empty (or gone): keep it and the folders above it


def claim(path: str | os.PathLike[str], *, create: bool, exclusive: bool = False) -> Claim:
    """Lock the run directory ``path`` (creating it and missing parents if ``create``).

    With ``exclusive``, ``path`` itself must be new: :class:`FileExistsError`
    if it exists (a fresh default name taken by a run started at the same time).

    Raises
    ------
    FileWriteError
        If the folder cannot be created or written.
    RunLockedError
        If another process holds its lock (the message names it).
    """
    path = Path(path)
    created = _missing_folders(path) if create else []
    if create:
        if exclusive:
            check_output_folder(path.parent, "the runs folder")
            try:
                path.mkdir()
            except FileExistsError:
                raise
            except OSError as err:
                raise FileWriteError(f"cannot create the run directory {path}: {err}") from None
        check_output_folder(path, "the run directory")
    lock = RunLock(path)
    try:
        lock.acquire()
    except BaseException:
        Claim(path, lock, created).discard()
        raise
    return Claim(path, lock, created)


def clean_stale_temporaries(claimed: Claim) -> list[Path]:
    """Delete the temporary files an interrupted write left in the claimed folder.

    Only under the claim's lock: a live writer's temporary file looks the same.
    """
    assert claimed.lock.held, "stale temporaries are only removed under the run's lock"
    return remove_stale_temporaries(claimed.path)


def _missing_folders(path: Path) -> list[Path]:
    """``path`` and those of its parents that do not exist, deepest first."""
    missing = []
    for folder in (path, *path.parents):
        if os.path.lexists(folder):
            break
        missing.append(folder)
    return missing
