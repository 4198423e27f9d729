"""The notebook-facing API: load a run, sample from it, reconstruct with it.

The CLI is a thin layer over these functions and :func:`pyrovae.train.train`.

Example
-------
>>> import pyrovae
>>> run = pyrovae.load_run()              # the latest run under runs/
>>> images = pyrovae.sample(run, n=64)    # (64, C, H, W) in [0, 1]
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pyrovae.checkpoint import CHECKPOINT_NAME, load_checkpoint
from pyrovae.config import RunConfig
from pyrovae.data import ImageData, to_unit_float
from pyrovae.errors import CheckpointError, ConfigError, first_line
from pyrovae.model import VAE
from pyrovae.training import CONFIG_NAME, prepare_data, resolve_device

DEFAULT_RUNS_ROOT = Path("runs")


@dataclass
class Run:
    """A trained VAE with the config and per-epoch metrics of its run folder."""

    run_dir: Path
    config: RunConfig
    vae: VAE
    history: list[dict[str, Any]]

    @property
    def device(self) -> torch.device:
        return next(self.vae.parameters()).device

    def data(self) -> ImageData:
        """The run's data set, prepared as in training, on the run's device."""
        return prepare_data(self.config, self.device)


def latest_run(root: str | Path = DEFAULT_RUNS_ROOT) -> Path:
    """The run folder under ``root`` whose checkpoint was written last."""
    root = Path(root)
    checkpoints = sorted(root.glob(f"*/{CHECKPOINT_NAME}"), key=lambda p: p.stat().st_mtime)
    if not checkpoints:
        raise CheckpointError(
            f"no trained run under {root}/; train one with `pyrovae train` or pass --run DIR"
        )
    return checkpoints[-1].parent


def load_run(run_dir: str | Path | None = None, device: str = "auto") -> Run:
    """Rebuild the VAE of ``run_dir`` (default: :func:`latest_run`) from its checkpoint."""
    run_dir = Path(run_dir) if run_dir is not None else latest_run()
    if not run_dir.is_dir():
        raise CheckpointError(f"no run directory at {run_dir}")
    config = RunConfig.load(run_dir / CONFIG_NAME)
    state = load_checkpoint(run_dir / CHECKPOINT_NAME)
    try:
        config.validate()
        vae = VAE(config.model)
        vae.load_state_dict(state["model"])
    except (ConfigError, KeyError, RuntimeError) as err:
        raise CheckpointError(
            f"checkpoint in {run_dir} does not match its config: {first_line(err)}"
        ) from None
    vae.to(resolve_device(device)).eval()
    history = list(state.get("history", []))
    return Run(run_dir=run_dir, config=config, vae=vae, history=history)


def sample(
    run: Run,
    n: int = 64,
    *,
    temperature: float = 1.0,
    mean: bool = True,
    seed: int | None = None,
) -> torch.Tensor:
    """``n`` generated images ``(n, C, H, W)`` in [0, 1], on the CPU.

    ``temperature`` scales the prior's spread (< 1: more typical images);
    ``mean`` returns E[x|z] rather than a draw from p(x|z).
    """
    if n < 1:
        raise ConfigError(f"-n must be at least 1, got {n}")
    if not temperature > 0:
        raise ConfigError(f"--temperature must be positive, got {temperature}")
    with _seeded(seed, run.device):
        return run.vae.sample(n, temperature=temperature, mean=mean).cpu()


def reconstruct(
    run: Run, n: int = 16, *, split: str = "test", mean: bool = True, seed: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` images of ``split`` and their reconstructions, both on the CPU."""
    if n < 1:
        raise ConfigError(f"-n must be at least 1, got {n}")
    data = run.data()
    images = {"test": data.test, "train": data.train}[split]
    originals = to_unit_float(images[:n])
    with _seeded(seed, run.device):
        return originals.cpu(), run.vae.reconstruct(originals, mean=mean).cpu()


@contextmanager
def _seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Draw from ``seed`` without disturbing the caller's RNG state (nothing when None)."""
    if seed is None:
        yield
        return
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The per-epoch rows of ``metrics.jsonl``."""
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
