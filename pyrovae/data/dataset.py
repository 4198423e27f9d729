"""A data set already split into train and test: tensors in memory, or rows read on demand."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from pyrovae.errors import DataError

#: What the data set's name is when its arrays were passed from Python
#: (``pyrovae.train(data=X)``): there is no file to read them again from.
MEMORY = "<memory>"


@runtime_checkable
class Rows(Protocol):
    """Data points read on demand (streamed from disk), indexed like a tensor along dim 0.

    ``rows[index]`` with a slice or a 1-D index tensor returns those points as a
    tensor ``(len(index), *shape[1:])`` on the CPU; :mod:`pyrovae.data.streams`
    has the readers.
    """

    @property
    def shape(self) -> torch.Size: ...

    @property
    def dtype(self) -> torch.dtype: ...

    def __len__(self) -> int: ...

    def __getitem__(self, index: slice | torch.Tensor) -> torch.Tensor: ...


def is_image_shape(shape: tuple[int, ...] | None) -> bool:
    """Whether data points of ``shape`` are images that grids can show: (1 or 3, H, W)."""
    return shape is not None and len(shape) == 3 and shape[0] in (1, 3)


@dataclass(eq=False)
class ArrayData:
    """A data set of points of one shape, already split into train and test.

    Parameters
    ----------
    name
        The name or path it was loaded from (:data:`MEMORY` for arrays passed
        from Python).
    train
        Training points, ``(N, *data_shape)``: ``uint8`` pixels in 0..255 or
        floats; a tensor in memory, or :class:`Rows` streamed from disk.
    test
        Held-out points, ``(M, *data_shape)``, same dtype and point shape as
        ``train``, always in memory.
    train_labels, test_labels
        Class labels, ``(N,)`` and ``(M,)`` ``int64``, or ``None`` where the
        source has none.
    reading
        How the training points are read, for the run's log line (e.g.
        ``"in memory"``, or why they are streamed).
    classes
        The name of each label (label ``i`` is ``classes[i]``), where the
        source names them: CIFAR-10's classes, an image folder's subfolders.
    train_rows, test_rows
        Where the splits were drawn from one array at random (a file without
        a split of its own, data from Python): each point's row in that array,
        so that messages name the row a user can find (:func:`source_row`);
        ``None`` where a point's index in its split is its row.
    """

    name: str
    train: torch.Tensor | Rows
    test: torch.Tensor
    train_labels: torch.Tensor | None = None
    test_labels: torch.Tensor | None = None
    reading: str = "in memory"
    classes: tuple[str, ...] | None = None
    train_rows: torch.Tensor | None = None
    test_rows: torch.Tensor | None = None

    def rows(self, split: str) -> torch.Tensor | None:
        """:attr:`train_rows` for ``"training"`` (or ``"train"``), :attr:`test_rows` for
        ``"test"``, else ``None``."""
        return {"training": self.train_rows, "train": self.train_rows, "test": self.test_rows}.get(
            split
        )

    def __post_init__(self) -> None:
        # Cheap structural checks only: this also runs on every ``to()``.
        for split, x in (("train", self.train), ("test", self.test)):
            if len(x.shape) < 2:
                raise DataError(
                    f"{self.name}: the {split} split has shape {tuple(x.shape)}; expected "
                    "(N, ...) with one data point per row, e.g. (N, D) or (N, C, H, W)"
                )
        if self.train.shape[1:] != self.test.shape[1:] or self.train.dtype != self.test.dtype:
            raise DataError(
                f"{self.name}: train points are {tuple(self.train.shape[1:])} {self.train.dtype} "
                f"but test points are {tuple(self.test.shape[1:])} {self.test.dtype}; "
                "both splits must have one point shape and dtype"
            )
        for split, x, y in (
            ("train", self.train, self.train_labels),
            ("test", self.test, self.test_labels),
        ):
            if y is not None and tuple(y.shape) != (x.shape[0],):
                raise DataError(
                    f"{self.name}: {split} labels have shape {tuple(y.shape)} "
                    f"for {x.shape[0]} points; expected ({x.shape[0]},)"
                )

    @property
    def data_shape(self) -> tuple[int, ...]:
        """The shape of one data point, e.g. ``(C, H, W)`` or ``(D,)``."""
        return tuple(int(size) for size in self.train.shape[1:])

    @property
    def streamed(self) -> bool:
        """Whether the training points are read from disk batch by batch."""
        return not isinstance(self.train, torch.Tensor)

    def to(self, device: torch.device | str) -> ArrayData:
        """Return a copy with every tensor on ``device`` (dtypes unchanged); streamed
        rows stay where they are and are moved a batch at a time."""

        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device)

        train = self.train.to(device) if isinstance(self.train, torch.Tensor) else self.train
        return dataclasses.replace(
            self,
            train=train,
            test=self.test.to(device),
            train_labels=move(self.train_labels),
            test_labels=move(self.test_labels),
        )

    def __repr__(self) -> str:
        # The dataclass default would print the values.
        def describe(t: torch.Tensor | Rows) -> str:
            where = t.device if isinstance(t, torch.Tensor) else "disk"
            return f"{tuple(t.shape)} {str(t.dtype).removeprefix('torch.')} on {where}"

        labelled = self.train_labels is not None
        return (
            f"ArrayData(name={self.name!r}, train={describe(self.train)}, "
            f"test={describe(self.test)}, labels={labelled})"
        )


def source_row(rows: torch.Tensor | None, index: int) -> str:
    """``" (row R of the array it was split from)"`` for point ``index`` of a split whose
    points are the rows ``rows`` of one array (:attr:`ArrayData.train_rows`: the file or
    ``data=``, or a file's own training array for the validation split), else ``""``."""
    if rows is None or not 0 <= index < len(rows):
        return ""
    return f" (row {int(rows[index])} of the array it was split from)"


def split_indices(n: int, seed: int, test_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded train and test indices of ``n`` points, each sorted (the source's order kept).

    At least one point is held out when there are two or more.
    """
    n_test = 0 if n < 2 else min(n - 1, max(1, round(test_fraction * n)))
    generator = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=generator)
    return perm[n_test:].sort().values, perm[:n_test].sort().values


def random_split(
    name: str,
    images: torch.Tensor,
    labels: torch.Tensor | None,
    seed: int,
    test_fraction: float,
    **fields: object,
) -> ArrayData:
    """One array split at random (:func:`split_indices`) into an :class:`ArrayData` that
    knows each point's row in it (``fields``: its other fields, e.g. ``classes``)."""
    train_rows, test_rows = split_indices(images.shape[0], seed, test_fraction)
    return ArrayData(
        name,
        images[train_rows],
        images[test_rows],
        None if labels is None else labels[train_rows],
        None if labels is None else labels[test_rows],
        train_rows=train_rows,
        test_rows=test_rows,
        **fields,  # type: ignore[arg-type]
    )
