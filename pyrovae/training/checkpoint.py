"""Checkpoints: written atomically, read without running pickled code.

A checkpoint is one ``torch.save`` file holding only tensors, numbers,
strings, lists and dicts, so :func:`torch.load` runs with
``weights_only=True``: a file that carries a pickle payload is refused, not
executed. Writes go through :func:`pyrovae.files.atomic_write`, so a crash
leaves either the old checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from pyrovae.errors import CheckpointError, first_line
from pyrovae.files import atomic_write_bytes

FORMAT = "pyrovae-checkpoint"
# The best checkpoint (:data:`pyrovae.files.BEST_CHECKPOINT_NAME`, runs with --val-fraction)
# holds ``epoch``, ``model`` and ``history``.

#: 2: the encoder and guide head live under ``amortized_guide`` in the state dict.
#: 3: components declare their options; the config records them and their providers.
VERSION = 3


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
        reason = f"it is truncated, corrupted or not a torch checkpoint ({first_line(err, 120)})"
        if isinstance(err, PermissionError):
            reason = "permission denied"
        elif "weights_only" in str(err) or "Unsupported global" in str(err):
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
