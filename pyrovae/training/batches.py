"""Minibatches of an epoch, from data in memory or streamed from disk.

Both sources give the same batches: the epoch's seeded permutation cut into
global batches, each process taking its contiguous shard of every one. Data
in memory are indexed on the training device; streamed rows
(:mod:`pyrovae.data.streams`) are read by a :class:`torch.utils.data.DataLoader`
whose workers read ahead, into pinned memory on CUDA.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader

from pyrovae.data.dataset import Rows
from pyrovae.errors import DataError, describe_exception

#: Most worker processes that read streamed batches ahead of the step.
MAX_WORKERS = 4


def batch_indices(
    order: torch.Tensor, batch_size: int, shard: tuple[int, int]
) -> Iterator[tuple[torch.Tensor, int]]:
    """This process's indices of each global batch of ``order``, with the global batch's size."""
    rank, world_size = shard
    for start in range(0, order.shape[0], batch_size):
        index = order[start : start + batch_size]
        n_total = index.shape[0]
        if world_size > 1:
            index = index.tensor_split(world_size)[rank]
        yield index, n_total


def memory_batches(
    images: torch.Tensor, order: torch.Tensor, batch_size: int, shard: tuple[int, int]
) -> Iterator[tuple[torch.Tensor, int]]:
    """Batches ``(x, n_total)`` of data held on the training device."""
    for index, n_total in batch_indices(order, batch_size, shard):
        yield images[index], n_total


def streamed_batches(
    rows: Rows,
    order: torch.Tensor,
    batch_size: int,
    shard: tuple[int, int],
    device: torch.device,
    workers: int | None = None,
) -> Iterator[tuple[torch.Tensor, int]]:
    """Batches ``(x, n_total)`` read from disk by a DataLoader, moved to ``device``.

    The loader's sampler yields whole index batches (``batch_size=None``), each
    sorted, so that a batch is one forward pass over the file rather than
    ``batch_size`` scattered reads; the batch's own order is restored after.
    """
    order = order.cpu()
    loader: DataLoader[torch.Tensor | DataError] = DataLoader(
        _ErrorsAsValues(rows),  # type: ignore[arg-type]
        sampler=SortedBatches(order, batch_size, shard),  # type: ignore[arg-type]
        batch_size=None,
        num_workers=default_workers() if workers is None else workers,
        pin_memory=device.type == "cuda",
        # The loader draws its workers' base seed from this generator, not from the
        # global stream the steps draw from: a streamed run draws what one in memory does.
        generator=torch.Generator().manual_seed(0),
    )
    batches = batch_indices(order, batch_size, shard)
    for x, (index, n_total) in zip(loader, batches, strict=True):
        if isinstance(x, DataError):
            raise x
        unsorted = index.sort().indices.argsort()  # where each point of the batch was read
        yield x.to(device, non_blocking=True)[unsorted.to(device)], n_total


class _ErrorsAsValues:
    """The rows, with an error in reading them (a file changed or gone since the run
    began) returned as a :class:`DataError` rather than raised: a DataLoader worker
    re-raises an error as its multi-line traceback text, and the error is one line to
    the user."""

    def __init__(self, rows: Rows) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: torch.Tensor) -> torch.Tensor | DataError:
        try:
            return self.rows[index]
        except DataError as exc:
            return DataError(str(exc))
        except OSError as exc:
            return DataError(f"reading the streamed data failed ({describe_exception(exc)})")


class SortedBatches:
    """The sampler of :func:`streamed_batches`: each batch's indices, sorted, made as they
    are asked for (a list of them would hold a copy of the permutation)."""

    def __init__(self, order: torch.Tensor, batch_size: int, shard: tuple[int, int]) -> None:
        self.order, self.batch_size, self.shard = order, batch_size, shard

    def __iter__(self) -> Iterator[torch.Tensor]:
        for index, _ in batch_indices(self.order, self.batch_size, self.shard):
            yield index.sort().values


def default_workers() -> int:
    """Reader processes for streamed data: the cores beyond the training one, at most
    :data:`MAX_WORKERS`; none on a machine of one or two cores, where they would
    take the training step's core."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(0, min(MAX_WORKERS, (cores or 1) - 2))
