"""Figures of a run: image grids (torchvision) and the loss curve (matplotlib)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from pyrovae.data import to_unit_float

#: Images smaller than this many pixels on a side are enlarged in grids.
MIN_DISPLAY_SIZE = 32


def save_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None) -> Path:
    """Write ``images`` ``(n, C, H, W)`` in [0, 1] as one PNG grid; return its path."""
    from torchvision.utils import save_image

    path = Path(path)
    nrow = nrow or max(1, math.ceil(math.sqrt(images.shape[0])))  # a square-ish grid
    images = images.detach().float().clamp(0, 1).cpu()
    # Small images (the 8x8 digits) are enlarged, pixel for pixel, to be visible.
    factor = max(1, MIN_DISPLAY_SIZE // max(images.shape[-2:]))
    if factor > 1:
        images = F.interpolate(images, scale_factor=factor, mode="nearest")
    save_image(images, path, nrow=nrow, padding=2, pad_value=1)
    return path


def save_reconstructions(
    originals: torch.Tensor, reconstructions: torch.Tensor, path: str | Path
) -> Path:
    """Two rows per group of images: originals above their reconstructions."""
    n = originals.shape[0]
    nrow = min(n, 8)
    rows = []
    for start in range(0, n, nrow):
        rows += [originals[start : start + nrow], reconstructions[start : start + nrow]]
    return save_grid(torch.cat(rows), path, nrow=nrow)


def save_loss_curve(history: list[dict[str, Any]], path: str | Path) -> Path:
    """Train and test ELBO per data point against epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    epochs = [row["epoch"] for row in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, [row["train_elbo"] for row in history], marker=".", label="train")
    ax.plot(epochs, [row["test_elbo"] for row in history], marker=".", label="test")
    ax.set_xlabel("epoch")
    ax.set_ylabel("ELBO per data point (nats)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def save_run_figures(
    vae: Any, test_images: torch.Tensor, history: list[dict[str, Any]], run_dir: Path
) -> list[Path]:
    """``samples.png`` (64 draws), ``reconstructions.png`` (16 test images), ``loss_curve.png``."""
    originals = to_unit_float(test_images[:16])
    return [
        save_grid(vae.sample(64), run_dir / "samples.png"),
        save_reconstructions(
            originals, vae.reconstruct(originals), run_dir / "reconstructions.png"
        ),
        save_loss_curve(history, run_dir / "loss_curve.png"),
    ]
