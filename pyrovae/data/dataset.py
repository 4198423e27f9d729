"""A data set held in memory, already split into train and test tensors."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from pyrovae.errors import DataError


@dataclass(eq=False)
class ImageData:
    """A data set of images held whole in memory, already split.

    Parameters
    ----------
    name
        The name or path it was loaded from.
    train
        Training images, ``(N, C, H, W)``, ``uint8`` in 0..255 or ``float32``
        in [0, 1].
    test
        Held-out images, ``(M, C, H, W)``, same dtype and image shape as
        ``train``.
    train_labels, test_labels
        Class labels, ``(N,)`` and ``(M,)`` ``int64``, or ``None`` where the
        source has none.
    """

    name: str
    train: torch.Tensor
    test: torch.Tensor
    train_labels: torch.Tensor | None = None
    test_labels: torch.Tensor | None = None

    def __post_init__(self) -> None:
        # Cheap structural checks only: this also runs on every ``to()``.
        for split, x in (("train", self.train), ("test", self.test)):
            if x.dim() != 4:
                raise DataError(
                    f"{self.name}: {split} images have shape {tuple(x.shape)}; "
                    "expected (N, C, H, W)"
                )
        if self.train.shape[1:] != self.test.shape[1:] or self.train.dtype != self.test.dtype:
            raise DataError(
                f"{self.name}: train images are {tuple(self.train.shape[1:])} {self.train.dtype} "
                f"but test images are {tuple(self.test.shape[1:])} {self.test.dtype}; "
                "both splits must have one image shape and dtype"
            )
        for split, x, y in (
            ("train", self.train, self.train_labels),
            ("test", self.test, self.test_labels),
        ):
            if y is not None and tuple(y.shape) != (x.shape[0],):
                raise DataError(
                    f"{self.name}: {split} labels have shape {tuple(y.shape)} "
                    f"for {x.shape[0]} images; expected ({x.shape[0]},)"
                )

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """The shape of one image, ``(C, H, W)``."""
        c, h, w = self.train.shape[1:]
        return int(c), int(h), int(w)

    def to(self, device: torch.device | str) -> ImageData:
        """Return a copy with every tensor on ``device`` (dtypes unchanged)."""

        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device)

        return dataclasses.replace(
            self,
            train=self.train.to(device),
            test=self.test.to(device),
            train_labels=move(self.train_labels),
            test_labels=move(self.test_labels),
        )

    def __repr__(self) -> str:
        # The dataclass default would print the pixels.
        def describe(t: torch.Tensor) -> str:
            return f"{tuple(t.shape)} {str(t.dtype).removeprefix('torch.')} on {t.device}"

        labelled = self.train_labels is not None
        return (
            f"ImageData(name={self.name!r}, train={describe(self.train)}, "
            f"test={describe(self.test)}, labels={labelled})"
        )


def random_split(
    images: torch.Tensor, labels: torch.Tensor | None, seed: int, test_fraction: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    n = images.shape[0]
    n_test = 0 if n < 2 else min(n - 1, max(1, round(test_fraction * n)))
    generator = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=generator)
    # Sorted, so each split keeps the source's order (file order, class order).
    test_idx = perm[:n_test].sort().values
    train_idx = perm[n_test:].sort().values
    if labels is None:
        return images[train_idx], images[test_idx], None, None
    return images[train_idx], images[test_idx], labels[train_idx], labels[test_idx]
