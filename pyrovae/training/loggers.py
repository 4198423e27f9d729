"""Training loggers (``--logger``): the run's figures as CSV files or TensorBoard events.

``metrics.jsonl`` is always written; a logger adds the loss every
:data:`~pyrovae.training.step.LOG_EVERY` steps, every figure of each epoch's
metrics row (train, validation and test ELBO, β, learning rate, times) and,
at each evaluation, image grids of samples and of test images above their
reconstructions. ``csv`` writes ``RUN/logs/steps.csv``, ``RUN/logs/epochs.csv``
and ``RUN/logs/images/*.png`` (atomically, at each checkpoint);
``tensorboard`` writes event files to ``RUN/tensorboard`` through
:class:`torch.utils.tensorboard.SummaryWriter` (``pip install
'pyrovae[tensorboard]'``; ``tensorboard --logdir RUN/tensorboard``). On a
resumed run both drop what was logged after the checkpoint.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Protocol

import torch

from pyrovae.errors import ConfigError
from pyrovae.files import atomic_write_bytes, atomic_write_text

CSV_FOLDER = "logs"
TENSORBOARD_FOLDER = "tensorboard"


class RunLogger(Protocol):
    """Where a run's figures go besides ``metrics.jsonl``."""

    def step(self, step: int, epoch: int, loss: float) -> None:
        """The mean loss per data point so far in the epoch, at global step ``step``."""

    def epoch(self, step: int, row: dict[str, Any]) -> None:
        """One epoch's metrics row, which ended at global step ``step``."""

    def images(self, step: int, epoch: int, name: str, grid: torch.Tensor) -> None:
        """An image grid ``(C, H, W)`` in [0, 1] after epoch ``epoch`` (1-based)."""

    def flush(self) -> None:
        """Make what was logged durable (called at each checkpoint)."""

    def close(self) -> None: ...


def check_available(name: str) -> None:
    """Refuse, before any work, a logger whose package is not installed."""
    if name != "tensorboard":
        return
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise ConfigError(
            "--logger tensorboard needs the tensorboard package: "
            "pip install 'pyrovae[tensorboard]' (or use --logger csv)"
        ) from None


def open_logger(name: str, run_dir: Path, *, epochs_done: int, step: int) -> RunLogger | None:
    """The logger ``name`` for ``run_dir``, continuing after epoch ``epochs_done``
    (global step ``step``); ``None`` for ``none``."""
    if name == "csv":
        return CSVLogger(run_dir / CSV_FOLDER, epochs_done=epochs_done)
    if name == "tensorboard":
        check_available(name)
        return TensorBoardLogger(run_dir / TENSORBOARD_FOLDER, step=step)
    return None


def scalars(row: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of a metrics row, by name."""
    return {
        key: value
        for key, value in row.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
        and math.isfinite(value)
    }  # fmt: skip


class CSVLogger:
    """``steps.csv``, ``epochs.csv`` and PNG grids under ``folder``."""

    def __init__(self, folder: Path, *, epochs_done: int) -> None:
        self.folder = folder
        self.steps = [row for row in _read_csv(folder / "steps.csv")
                      if float(row["epoch"]) <= epochs_done]  # fmt: skip
        self.rows = [row for row in _read_csv(folder / "epochs.csv")
                     if float(row["epoch"]) <= epochs_done]  # fmt: skip

    def step(self, step: int, epoch: int, loss: float) -> None:
        self.steps.append({"step": step, "epoch": epoch, "loss": loss})

    def epoch(self, step: int, row: dict[str, Any]) -> None:
        self.rows.append({"step": step, **scalars(row)})

    def images(self, step: int, epoch: int, name: str, grid: torch.Tensor) -> None:
        from torchvision.utils import save_image

        (self.folder / "images").mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        save_image(grid, buffer, format="png")
        atomic_write_bytes(self.folder / "images" / f"{name}-epoch{epoch:04d}.png",
                           buffer.getvalue())  # fmt: skip

    def flush(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.folder / "steps.csv", _csv_text(self.steps))
        atomic_write_text(self.folder / "epochs.csv", _csv_text(self.rows))

    def close(self) -> None:
        self.flush()


def _read_csv(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _csv_text(rows: list[dict[str, Any]]) -> str:
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


class TensorBoardLogger:
    """Event files read by ``tensorboard --logdir``: ``loss/step``, ``epoch/<figure>``,
    and image grids."""

    def __init__(self, folder: Path, *, step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # Everything is logged against the global step, so that purge_step drops
        # all that a resumed run logged after its checkpoint (at ``step``).
        self.writer = SummaryWriter(log_dir=str(folder), purge_step=step + 1 if step else None)

    def step(self, step: int, epoch: int, loss: float) -> None:
        self.writer.add_scalar("loss/step", loss, step)

    def epoch(self, step: int, row: dict[str, Any]) -> None:
        for key, value in scalars(row).items():
            self.writer.add_scalar(f"epoch/{key}", value, step)

    def images(self, step: int, epoch: int, name: str, grid: torch.Tensor) -> None:
        self.writer.add_image(name, grid, step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
