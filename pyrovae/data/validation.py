"""A validation split carved from the training points, for every data set.

The test split stays the test split (the data set's own, or
``test_fraction`` of a file's points); ``val_fraction`` of the *training*
points is held out with the run's seed, binarized once (for a binary
likelihood) so that validation ELBOs are comparable across epochs, and
scored at each evaluation to pick the best checkpoint and to stop early
(Prechelt 1998, "Early Stopping - But When?").
"""

from __future__ import annotations

import dataclasses

import torch

from pyrovae.data.dataset import ArrayData, Rows, split_indices
from pyrovae.data.missing import bernoulli_observed
from pyrovae.data.pixels import is_binary, to_unit_float
from pyrovae.errors import DataError


class RowSubset:
    """The rows ``index`` of streamed rows (:class:`~pyrovae.data.dataset.Rows`), read on demand."""

    def __init__(self, rows: Rows, index: torch.Tensor) -> None:
        self.source, self.index = rows, index

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.index), *self.source.shape[1:]))

    @property
    def dtype(self) -> torch.dtype:
        return self.source.dtype

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, index: slice | torch.Tensor) -> torch.Tensor:
        picked = self.index[index.cpu() if isinstance(index, torch.Tensor) else index]
        return self.source[picked.reshape(-1)]


@dataclasses.dataclass(eq=False)
class Held:
    """The training data less the validation points, and those points (in memory)
    with their labels where the data have labels."""

    data: ArrayData
    validation: torch.Tensor | None
    validation_labels: torch.Tensor | None = None
    #: Each validation point's row before the splits (see :func:`source_row`).
    validation_rows: torch.Tensor | None = None


def hold_out_validation(data: ArrayData, fraction: float, seed: int, *, binary: bool) -> Held:
    """Hold out ``fraction`` of ``data``'s training points as a validation split.

    Chosen with ``seed`` (a stream of its own: the test split and the training
    order are unchanged by it). With ``binary`` (a binary likelihood) and
    points that are not binary yet (dynamic binarization), the validation
    points are binarized once with a fixed seed.
    """
    if fraction <= 0:
        return Held(data, None)
    n = data.train.shape[0]
    train_idx, val_idx = split_indices(n, seed, fraction)
    if len(val_idx) == 0 or len(train_idx) == 0:
        raise DataError(
            f"{data.name} has {n} training points: too few to hold out --val-fraction "
            f"{fraction}; leave out --val-fraction or use more data"
        )
    device = data.train.device if isinstance(data.train, torch.Tensor) else torch.device("cpu")
    if isinstance(data.train, torch.Tensor):
        train: torch.Tensor | Rows = data.train[train_idx.to(device)]
        validation = data.train[val_idx.to(device)]
    else:
        train, validation = RowSubset(data.train, train_idx), data.train[val_idx]
    labels = data.train_labels
    if binary and not is_binary(validation):
        generator = torch.Generator().manual_seed(seed + 3)
        # Missing values (NaN) stay missing (pyrovae.data.missing).
        values = bernoulli_observed(to_unit_float(validation.cpu()), generator=generator)
        if validation.dtype == torch.uint8:
            values = values.mul(255).to(torch.uint8)
        validation = values.to(device)
    # Each point's row before the splits: of one array split at random, or else of the
    # training array this split was drawn from (messages name it: source_row).
    rows = data.train_rows
    kept = dataclasses.replace(
        data,
        train=train,
        train_labels=None if labels is None else labels[train_idx.to(labels.device)],
        train_rows=train_idx if rows is None else rows[train_idx],
    )
    val_labels = None if labels is None else labels[val_idx.to(labels.device)]
    val_rows = val_idx if rows is None else rows[val_idx]
    return Held(kept, validation.to(data.test.device), val_labels, val_rows)
