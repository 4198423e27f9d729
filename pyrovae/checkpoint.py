"""Checkpoints: written atomically, read without running pickled code.

A checkpoint is one ``torch.save`` file holding only tensors, numbers,
strings, lists and dicts, so :func:`torch.load` runs with
``weights_only=True``: a file that carries a pickle payload is refused, not
executed. Writes go to a temporary file in the same folder, are flushed and
fsynced, then renamed over the old file, so a crash leaves either the old
checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from pyrovae.errors import CheckpointError, first_line

FORMAT = "pyrovae-checkpoint"
#: 2: the encoder and guide head live under ``amortized_guide`` in the state dict.
VERSION = 2
CHECKPOINT_NAME = "checkpoint.pt"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` by ``data`` so that readers see the old or the new file, whole."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file private (0600); give it the permissions of a
        # file opened normally, as the user's umask says.
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` (tensors and plain containers only) as a checkpoint."""
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, "version": VERSION, **state}, buffer)
    atomic_write_bytes(Path(path), buffer.getvalue())


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises
    ------
    CheckpointError
        If the file is missing, truncated, corrupted, carries code to unpickle,
        or was not written by pyrovae.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for a bad file; all mean the same here
        reason = first_line(err)
        if "weights_only" in str(err) or "Unsupported global" in str(err):
            reason = "it contains pickled objects other than tensors, refused for safety"
        raise CheckpointError(f"cannot load checkpoint {path}: {reason}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a pyrovae checkpoint")
    if state.get("version") != VERSION:
        raise CheckpointError(
            f"{path} has checkpoint version {state.get('version')!r}; "
            f"this pyrovae reads version {VERSION}"
        )
    return state
