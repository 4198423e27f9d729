"""Reconstructions of corrupted inputs: what a denoising model makes of x̃ ~ C(x̃|x).

``pyrovae reconstruct --corrupt SPEC`` shows rows of clean images, their
corrupted copies (the corruptions of :mod:`pyrovae.model.corruption`, as
``train --corrupt`` takes them) and the reconstructions decoded from the
corrupted copies, so a denoising and a plain run can be compared on the same
corruption.

Example
-------
>>> run = pyrovae.load_run("runs/dae")  # doctest: +SKIP
>>> result = pyrovae.reconstruct_corrupted(run, 8, corrupt="mask:0.5")  # doctest: +SKIP
>>> [label for label, _ in result.rows]  # doctest: +SKIP
['clean', 'corrupted (mask:0.5)', 'reconstructed']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from pyrovae.config import RunConfig
from pyrovae.data.dataset import ArrayData
from pyrovae.data.memory import DataSource
from pyrovae.data.pixels import to_unit_float
from pyrovae.errors import ConfigError, check_count
from pyrovae.model.corruption import CORRUPT_HELP, parse_corruption
from pyrovae.model.vae import VAE
from pyrovae.runtime import isolated_rng


class LoadedRun(Protocol):
    """What is used of a :class:`pyrovae.api.Run` (named so, and not imported, because
    :mod:`pyrovae.api` imports this module)."""

    vae: VAE
    config: RunConfig

    @property
    def device(self) -> torch.device: ...

    def data(
        self, data: DataSource | None = None, test_data: DataSource | None = None
    ) -> ArrayData: ...


#: Images reconstructed at a time.
BATCH_SIZE = 1024


@dataclass
class CorruptedReconstructions:
    """Clean images, their corrupted copies and the reconstructions of those, on the CPU,
    each ``(n, *data_shape)``; ``spec`` is the corruption (``"mask:0.5"``)."""

    clean: torch.Tensor
    corrupted: torch.Tensor
    reconstructed: torch.Tensor
    spec: str

    @property
    def rows(self) -> list[tuple[str, torch.Tensor]]:
        """The three rows of the figure, labelled."""
        return [
            ("clean", self.clean),
            (f"corrupted ({self.spec})", self.corrupted),
            ("reconstructed", self.reconstructed),
        ]


def reconstruct_corrupted(
    run: LoadedRun,
    n: int = 16,
    *,
    corrupt: str,
    split: str = "test",
    mean: bool = True,
    seed: int | None = None,
    data: DataSource | None = None,
    test_data: DataSource | None = None,
) -> CorruptedReconstructions:
    """The first ``n`` points of ``split``, corrupted by ``corrupt`` and reconstructed.

    Parameters
    ----------
    run
        A loaded run (:func:`pyrovae.load_run`).
    corrupt
        ``mask:P``, ``gaussian:SIGMA`` or ``salt-pepper:P``.
    mean, seed, data, test_data
        As for :func:`pyrovae.reconstruct`; ``seed`` fixes the corruption too.
    """
    corruption = parse_corruption(corrupt, run.config.data.display_range)
    if corruption is None:
        raise ConfigError(f"--corrupt takes {CORRUPT_HELP} (e.g. mask:0.3), got nothing")
    n = check_count(n, "n")
    if split not in ("test", "train"):
        raise ConfigError(f"split must be 'test' or 'train', got {split!r}")
    prepared = run.data(data, test_data)
    clean = to_unit_float({"test": prepared.test, "train": prepared.train}[split][:n])
    with isolated_rng(run.device, seed):
        corrupted = corruption(clean)
        reconstructed = torch.cat(
            [run.vae.reconstruct(part, mean=mean) for part in corrupted.split(BATCH_SIZE)]
        )
    return CorruptedReconstructions(
        clean.cpu(), corrupted.cpu(), reconstructed.cpu(), corruption.spec
    )
