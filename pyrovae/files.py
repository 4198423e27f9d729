"""Output files: written whole or not at all, at exactly the path asked for.

Every file pyrovae writes (checkpoints, configs, metrics, figures, reports,
arrays) goes through :func:`atomic_write`: the content is written to a
temporary file in the destination's folder, flushed and fsynced, then renamed
over the destination, so a crash or Ctrl-C leaves the old file or the new
one, never half of one. The rename would replace whatever sits at the path,
so the path is checked first:

- a symbolic link is written *through*: its target file is replaced, the link
  stays a link;
- anything that is not a regular file (a device such as ``/dev/full``, a
  folder, a FIFO) is refused with a one-line :class:`~pyrovae.errors.FileWriteError`
  rather than replaced by a regular file.

:func:`check_output_file` and :func:`check_output_folder` run the same checks
(and whether the folder is writable) *before* long work starts, so a bad
``--out`` is one line at once, not a traceback after an hour of sampling.

:class:`RunLock` is an OS-level lock (``fcntl.flock``) on a run directory:
while one process trains or resumes a run, a second one gets a one-line error
naming the holder instead of overwriting its checkpoint. The kernel releases
the lock when the holder dies, even by ``kill -9``, so a lock is never stale.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from pyrovae.errors import FileWriteError, RunLockedError

#: Temporary files are named ``.<name>.<random>.tmp<suffix>`` (the suffix kept,
#: so writers that pick a format from it still can).
TEMP_MARK = ".tmp"
LOCK_NAME = ".lock"


def _reason(err: OSError) -> str:
    return err.strerror or str(err) or type(err).__name__


def resolve_output(path: str | os.PathLike[str]) -> Path:
    """The regular file that writing ``path`` should replace.

    A symlink resolves to its target (written through); a path that exists
    and is not a regular file raises :class:`FileWriteError`.
    """
    path = Path(path)
    try:
        linked = path.is_symlink()
    except OSError as err:  # a folder on the way that cannot be searched
        raise FileWriteError(f"cannot write {path}: {_reason(err)}") from None
    target = Path(os.path.realpath(path)) if linked else path
    try:
        mode = target.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        return target  # a new file; its folder is checked where it is created
    except OSError as err:
        raise FileWriteError(f"cannot write {path}: {_reason(err)}") from None
    if stat.S_ISDIR(mode):
        raise FileWriteError(f"cannot write {path}: it is a folder, not a file")
    if not stat.S_ISREG(mode):
        raise FileWriteError(
            f"cannot write {path}: it is not a regular file (a device, FIFO or socket); "
            "pick a file path"
        )
    return target


def check_output_folder(
    folder: str | os.PathLike[str], what: str = "the output folder", *, create: bool = True
) -> Path:
    """Create ``folder`` (and its parents) if needed and check that files can be made in it.

    With ``create=False`` a missing folder is not made yet: the nearest folder
    above it that exists is checked instead, and the writers make it
    (:func:`atomic_write` creates a file's folder), so that work that fails or is
    interrupted before writing leaves no empty folder behind.
    """
    _check_not_empty(folder, what)
    folder = Path(folder)
    if not create:
        above = _nearest_existing(folder, what)
        if above != folder:
            _check_writable(above, f"{what} {folder}")
            return folder
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise FileWriteError(
            f"cannot create {what} {folder}: a file of that name (or of a folder above it) exists"
        ) from None
    except OSError as err:
        raise FileWriteError(f"cannot create {what} {folder}: {_reason(err)}") from None
    _check_writable(folder, f"{what} {folder}")
    return folder


def _nearest_existing(folder: Path, what: str) -> Path:
    """``folder`` if it exists, else the nearest folder above it that does; a file, or a
    symlink to nothing, in the way (which ``mkdir`` would refuse after the work) or a
    folder that cannot be searched is a one-line :class:`FileWriteError`."""
    try:
        for path in (folder, *folder.absolute().parents):
            if path.exists():
                if not path.is_dir():
                    raise FileWriteError(
                        f"cannot create {what} {folder}: a file of that name (or of a folder "
                        "above it) exists"
                    )
                return path
            if path.is_symlink():
                raise FileWriteError(
                    f"cannot create {what} {folder}: {path} is a symbolic link to a missing "
                    f"target ({os.readlink(path)})"
                )
    except OSError as err:
        raise FileWriteError(f"cannot create {what} {folder}: {_reason(err)}") from None
    return Path(folder.anchor or "/")


@contextmanager
def new_folders_removed_on_failure(folder: Path) -> Iterator[None]:
    """Within the block, ``folder`` and the folders above it that do not exist yet may
    be made (a download's target); if the block fails, those left empty are removed
    again, so a failed download leaves no empty folders behind."""
    top = None
    for path in (folder, *folder.absolute().parents):
        if os.path.lexists(path):
            break
        top = path
    try:
        yield
    except BaseException:
        if top is not None and top.is_dir():
            for inner, _, _ in sorted(os.walk(top), key=lambda walked: -len(walked[0])):
                with contextlib.suppress(OSError):  # a folder holding files is kept
                    os.rmdir(inner)
        raise


def _check_writable(folder: Path, what: str) -> None:
    """Refuse a folder in which no file can be made (``what`` names it in the message)."""
    if not os.access(folder, os.W_OK | os.X_OK):
        raise FileWriteError(f"cannot write into {what}: permission denied")
    try:
        # os.access answers yes to root even where no file can be made (/proc,
        # /sys, a read-only mount): make one.
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise FileWriteError(f"cannot write into {what}: {_reason(err)}") from None


def _check_not_empty(path: str | os.PathLike[str], what: str) -> None:
    """Refuse an empty path, which ``Path`` reads as the current folder."""
    if not os.fspath(path).strip():
        raise FileWriteError(f"{what} is an empty path; give a name")


def check_output_file(path: str | os.PathLike[str], suffixes: tuple[str, ...] = ()) -> Path:
    """Check, before any work, that ``path`` can be written; return the path to write.

    A missing folder is not made here (the atomic writers make it when they write,
    so work that fails first leaves none): the nearest folder above it is checked
    writable. ``suffixes`` (e.g. ``(".png",)``), when given, are the file endings
    the writer understands.
    """
    _check_not_empty(path, "the output file")
    path = Path(path)
    if suffixes and path.suffix.lower() not in suffixes:
        raise FileWriteError(f"{path} must end in {', '.join(suffixes)}")
    target = resolve_output(path)
    check_output_folder(target.parent, "the output folder", create=False)
    if target.name in RUN_STATE_FILES and _is_run_folder(target.parent):
        raise FileWriteError(
            f"{path} is the {target.name} of the run in {target.parent}: writing it would "
            "break the run; pick another name"
        )
    if target.exists() and not os.access(target, os.W_OK):
        raise FileWriteError(f"cannot write {path}: permission denied")
    return target


def check_distinct_files(
    outputs: Mapping[str, str | os.PathLike[str] | None],
    inputs: Mapping[str, str | os.PathLike[str] | None] | None = None,
) -> None:
    """Refuse, before any work, an output that names the same file as another output or
    as an input (by option, e.g. ``{"--out": out}``; ``None`` values are left out):
    the write would destroy the input, or one output the other.

    Raises
    ------
    FileWriteError
        Naming the two options.
    """
    seen: dict[Path, str] = {}
    for option, path in (inputs or {}).items():
        if path is not None:
            seen.setdefault(Path(os.path.realpath(path)), option)
    for option, path in outputs.items():
        if path is None:
            continue
        target = Path(os.path.realpath(path))  # symlinks and relative paths resolved
        if target in seen:
            other = seen[target]
            if inputs and other in inputs:
                raise FileWriteError(
                    f"{option} {path} is the file of {other}: writing it would overwrite "
                    "that input; pick another name"
                )
            raise FileWriteError(f"{option} {path} is the file of {other} too; pick another name")
        seen[target] = option


def _is_run_folder(folder: Path) -> bool:
    """Whether ``folder`` holds a run: its config as JSON and as TOML, which training
    writes first (a folder of another command's ``config.json`` output is not one)."""
    return (folder / CONFIG_NAME).is_file() and (folder / TOML_CONFIG_NAME).is_file()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], object]) -> Path:
    """Call ``write(handle)`` on a temporary file that then replaces ``path``.

    ``path`` is resolved as :func:`resolve_output` says. The file gets the
    permissions of an ordinarily created file (the umask's), is fsynced before
    the rename, and any failure (disk full, permission, Ctrl-C) removes the
    temporary file and leaves ``path`` as it was; an ``OSError`` becomes a
    one-line :class:`FileWriteError`. Returns the path written.
    """
    path = Path(path)
    target = resolve_output(path)
    _make_folder_of(target, path)
    try:
        fd, tmp = tempfile.mkstemp(
            dir=target.parent, prefix=f".{target.name}.", suffix=TEMP_MARK + target.suffix
        )
    except OSError as err:
        raise FileWriteError(f"cannot write {path}: {_reason(err)}") from None
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise FileWriteError(f"cannot write {path}: {_reason(err)}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_via_name(path: str | os.PathLike[str], write: Callable[[str], object]) -> Path:
    """As :func:`atomic_write`, for writers that take a file name rather than a handle
    (e.g. netCDF). The temporary name keeps ``path``'s suffix."""
    path = Path(path)
    target = resolve_output(path)
    _make_folder_of(target, path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}{TEMP_MARK}{target.suffix}")
    try:
        write(str(tmp))
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except OSError as err:
        raise FileWriteError(f"cannot write {path}: {_reason(err)}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _make_folder_of(target: Path, path: Path) -> None:
    """Create the folder ``target`` goes into, if missing (checked writable beforehand by
    :func:`check_output_folder` with ``create=False``)."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise FileWriteError(f"cannot write {path}: {_reason(err)}") from None


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Replace ``path`` by ``data`` (see :func:`atomic_write`)."""
    return atomic_write(path, lambda handle: handle.write(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Replace ``path`` by ``text`` in UTF-8 (see :func:`atomic_write`)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete temporary files that an interrupted :func:`atomic_write` left in ``folder``.

    Only call this while holding the folder's :class:`RunLock`: a live writer's
    temporary file looks the same. Returns the removed paths.
    """
    removed = []
    for candidate in Path(folder).glob(f".*{TEMP_MARK}*"):
        if candidate.is_file() and not candidate.is_symlink():
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


class RunLock:
    """An exclusive ``fcntl.flock`` on ``folder/.lock`` for the length of a ``with`` block.

    The lock file records the holder (process id, host, command, start time) so
    that a refused process can name it. The folder must exist.

    Example
    -------
    >>> with RunLock(run_dir):          # doctest: +SKIP
    ...     train_and_checkpoint()
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._handle: IO[str] | None = None

    def acquire(self) -> RunLock:
        import fcntl

        try:
            handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 (held open)
        except OSError as err:
            raise FileWriteError(f"cannot lock {self.folder}: {_reason(err)}") from None
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            handle.seek(0)
            holder = handle.read().strip()
            handle.close()
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise FileWriteError(f"cannot lock {self.folder}: {_reason(err)}") from None
            raise RunLockedError(
                f"{self.folder} is in use by another pyrovae process ({describe_holder(holder)}); "
                "wait for it to finish or stop it"
            ) from None
        if not _still_named(handle, self.path):
            # Its holder removed the file as it let go (pyrovae.training.rundir does) after we
            # opened it: this lock guards nothing; lock what the path names now.
            handle.close()
            return self.acquire()
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(_holder()) + "\n")
        handle.flush()
        self._handle = handle
        return self

    def release(self) -> None:
        if self._handle is not None:
            # The file stays (removing it would race with a waiting process); the
            # kernel lock is what counts.
            self._handle.close()
            self._handle = None

    @property
    def held(self) -> bool:
        return self._handle is not None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _still_named(handle: IO[str], path: Path) -> bool:
    """Whether ``path`` still names the file ``handle`` has open."""
    try:
        return os.path.samestat(os.fstat(handle.fileno()), os.stat(path))
    except FileNotFoundError:
        return False


def _holder() -> dict[str, Any]:
    import time

    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": " ".join(Path(sys.argv[0]).name.split() + sys.argv[1:])[:200],
        "since": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def describe_holder(text: str) -> str:
    """A lock file's holder record as words (``"pid 123 on host, since ..."``)."""
    try:
        holder = json.loads(text)
        return (
            f"pid {holder['pid']} on {holder['host']}, since {holder['since']}: {holder['command']}"
        )
    except (ValueError, KeyError, TypeError):
        return "holder unknown"


CHECKPOINT_NAME = "checkpoint.pt"

#: The checkpoint of the epoch with the best validation ELBO (runs with a validation split).
BEST_CHECKPOINT_NAME = "checkpoint-best.pt"

CONFIG_NAME = "config.json"

#: The run's options as a file ``pyrovae train --config`` reads.
TOML_CONFIG_NAME = "config.toml"

METRICS_NAME = "metrics.jsonl"

#: The files a run cannot lose: what ``--resume``, ``load_run`` and every command read.
RUN_STATE_FILES = (CONFIG_NAME, TOML_CONFIG_NAME, CHECKPOINT_NAME, BEST_CHECKPOINT_NAME,
                   METRICS_NAME)  # fmt: skip

#: What :func:`pyrovae.reports.figures.save_run_figures` draws at the end of a run.
RUN_FIGURES = ("samples.png", "reconstructions.png", "loss_curve.png")
