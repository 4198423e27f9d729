"""Data larger than memory: ``.npy`` files and image folders read a batch at a time.

A ``.npy`` file is opened with ``numpy.load(mmap_mode="r")`` for its shape,
dtype, layout and data offset; rows are then read with ``pread`` into a
batch of their own, so the process holds a batch, never the file: reading
through the mapping counts every page touched (and its neighbours, mapped by
fault-around) in the resident set until it is unmapped. A
folder of images is listed up front and each image decoded when read. The
trainer takes batches of either through a :class:`torch.utils.data.DataLoader`
(:func:`pyrovae.training.batches.streamed_batches`).

Whether to stream (``--stream auto``): when the data would take more than
:data:`AUTO_FRACTION` of the memory available now.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from pyrovae.data.folders import ImageReader
from pyrovae.data.pixels import check_float32_range, check_for_likelihood, is_binary
from pyrovae.errors import DataError, describe_exception

#: ``--stream auto`` streams data that would take more than this share of available memory.
AUTO_FRACTION = 0.25

#: Rows read at once by the checks that pass over a whole streamed set.
CHECK_ROWS = 4096


def available_memory() -> int:
    """Bytes of memory available now (``MemAvailable``), or all physical memory."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def choose(stream: str, nbytes: int) -> tuple[bool, str]:
    """Whether to stream data of ``nbytes`` under ``--stream stream``, and the reason, in words."""
    size = f"{nbytes / 1e9:.2f} GB"
    if stream == "yes":
        return True, f"streamed from disk ({size}; --stream yes)"
    if stream == "no":
        return False, f"in memory ({size}; --stream no)"
    available = available_memory()
    limit = AUTO_FRACTION * available
    if nbytes > limit:
        return True, (
            f"streamed from disk ({size}, over {AUTO_FRACTION:.0%} of the "
            f"{available / 1e9:.1f} GB of memory available; --stream auto)"
        )
    return False, f"in memory ({size}; --stream auto streams above {limit / 1e9:.1f} GB)"


class NpyRows(Dataset):
    """Rows of a ``.npy`` file, read on demand as ``uint8`` pixels or ``float32``.

    Parameters
    ----------
    path
        The file.
    rows
        Which of the file's rows, in order, this split holds.
    """

    def __init__(self, path: Path, rows: torch.Tensor) -> None:
        mapped = np.load(path, mmap_mode="r", allow_pickle=False)
        self.path, self.rows = path, rows.numpy()
        self.file_dtype, self.file_shape = mapped.dtype, mapped.shape
        self.offset = int(mapped.offset)
        self.fortran = bool(mapped.flags.f_contiguous and not mapped.flags.c_contiguous)
        del mapped  # unmapped: nothing stays resident
        # The file's layout as load_dataset reads it: (N, H, W) gains a channel,
        # (N, H, W, C) with C of 1 or 3 is moved to (N, C, H, W).
        self.channels_last = (
            len(self.file_shape) == 4
            and self.file_shape[1] not in (1, 3)
            and self.file_shape[3] in (1, 3)
        )
        point = self.file_shape[1:]
        if len(point) == 2:
            point = (1, *point)
        elif self.channels_last:
            point = (point[2], point[0], point[1])
        self._shape = torch.Size((len(self.rows), *point))

    @property
    def shape(self) -> torch.Size:
        return self._shape

    @property
    def dtype(self) -> torch.dtype:
        return torch.uint8 if self.file_dtype.kind in "iu" else torch.float32

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: slice | torch.Tensor | list[int]) -> torch.Tensor:
        wanted = self.rows[index.cpu().numpy() if isinstance(index, torch.Tensor) else index]
        values = self._read(np.atleast_1d(wanted))
        if self.channels_last:
            values = values.transpose(0, 3, 1, 2)
        values = np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("="))
        if values.dtype.kind in "iu":
            values = values.astype(np.uint8, copy=False)
        elif values.dtype.kind == "b" or values.dtype != np.float32:
            with np.errstate(over="ignore"):  # beyond float32: inf, which check() explains
                values = values.astype(np.float32)
        return torch.from_numpy(values.reshape(-1, *self._shape[1:]))

    def _read(self, wanted: np.ndarray) -> np.ndarray:
        """The file's rows ``wanted``, in that order, as stored.

        Read with ``pread``, one call per run of consecutive rows, not through a
        mapping: a page fault on a mapped file maps the cached pages around it
        too (fault-around), so reading scattered rows through a mapping made
        the resident set grow by up to 64 kB per row.
        """
        point = self.file_shape[1:]
        values = np.empty((len(wanted), *point), dtype=self.file_dtype)
        if not len(wanted):
            return values
        if self.fortran:  # rows are not contiguous in the file: gather through a mapping
            try:
                mapped = np.load(self.path, mmap_mode="r", allow_pickle=False)
                if (mapped.shape, mapped.dtype) != (self.file_shape, self.file_dtype):
                    raise DataError(
                        f"{self.path} changed under the run: it holds {mapped.dtype} points "
                        f"of shape {mapped.shape}, not {self.file_dtype} of {self.file_shape}"
                    )
                values[:] = mapped[wanted]
            except (ValueError, EOFError, IndexError) as exc:  # a file cut short, or emptied
                raise DataError(
                    f"{self.path} can no longer be read ({describe_exception(exc)}): is it "
                    "truncated?"
                ) from None
            del mapped
            return values
        flat = values.reshape(len(wanted), -1).view(np.uint8)  # (rows, bytes per row)
        row_bytes = flat.shape[1]
        breaks = np.flatnonzero(np.diff(wanted) != 1) + 1
        with open(self.path, "rb", buffering=0) as handle:
            for start, stop in zip(
                [0, *breaks.tolist()], [*breaks.tolist(), len(wanted)], strict=True
            ):
                at = self.offset + int(wanted[start]) * row_bytes
                _read_exactly(handle.fileno(), flat[start:stop].data.cast("B"), at)
        return values

    def check(self, what: str, *, unit_interval_for: str | None) -> None:
        """The checks a file read whole gets, a slice at a time; float values in [0, 1]
        where ``unit_interval_for`` names a likelihood that needs them (a binary one),
        else any finite value."""
        self.check_stored(what, floats=False)  # the floats' range is checked in this pass
        if self.file_dtype.kind != "f":
            return
        for start in range(0, len(self), CHECK_ROWS):
            values = self[start : start + CHECK_ROWS]
            if self.file_dtype.itemsize > 4 and bool(torch.isinf(values).any()):
                self._check_float32_range(what, start)  # inf from the cast, or in the file?
            if bool(torch.isnan(values).any()):
                raise DataError(
                    f"{what} (points from {start}) holds missing values (NaN), which a "
                    "streamed file cannot hold: train on it with --stream no (a run streamed "
                    "from it was trained without them, so the file has changed since)"
                )
            check_for_likelihood(
                values, f"{what} (points from {start})", unit_interval_for,
                rows=torch.from_numpy(self.rows[start : start + CHECK_ROWS]),
            )  # fmt: skip

    def check_stored(self, what: str, *, floats: bool = True) -> None:
        """The checks that come before any row is read as pixels: a dtype of numbers,
        integers in 0..255 (read as ``uint8``, others would wrap around) and, with
        ``floats``, float64 values within float32's range (else they become inf)."""
        kind = self.file_dtype.kind
        if kind not in "biuf":
            raise DataError(
                f"{what}: unsupported dtype {self.file_dtype}; expected uint8, integers in "
                "0..255, bool, or floats"
            )
        if kind == "f" and self.file_dtype.itemsize > 4 and floats:
            for start in range(0, len(self), CHECK_ROWS):
                self._check_float32_range(what, start)
            return
        if kind not in "iu" or self.file_dtype.itemsize == 1 and kind == "u":
            return
        for start in range(0, len(self), CHECK_ROWS):
            raw = self._read(self.rows[start : start + CHECK_ROWS])
            lo, hi = int(raw.min()), int(raw.max())
            if lo < 0 or hi > 255:
                raise DataError(
                    f"{what}: integer pixels run from {lo} to {hi}; expected 0..255 (or floats)"
                )

    def _check_float32_range(self, what: str, start: int) -> None:
        """Refuse finite float64 values beyond float32's range in the rows from ``start``."""
        check_float32_range(self._read(self.rows[start : start + CHECK_ROWS]), what)

    def is_binary(self) -> bool:
        return all(
            is_binary(self[start : start + CHECK_ROWS]) for start in range(0, len(self), CHECK_ROWS)
        )


def _read_exactly(fd: int, buffer: memoryview, offset: int) -> None:
    """Fill ``buffer`` from ``fd`` at ``offset`` (``pread`` may return less than asked)."""
    done = 0
    while done < len(buffer):
        n = os.preadv(fd, [buffer[done:]], offset + done)
        if n == 0:
            raise DataError(f"the file ended early at byte {offset + done}: is it truncated?")
        done += n


class FolderRows(Dataset):
    """Images of a folder, decoded on demand as ``uint8`` ``(C, H, W)``.

    Parameters
    ----------
    folder
        The folder.
    files
        Every image file of the set, in the set's order.
    rows
        Which of ``files``, in order, this split holds.
    reader
        How a file becomes pixels (:class:`pyrovae.data.folders.ImageReader`:
        converted and resized as ``--channels`` and ``--image-size`` say).
    """

    def __init__(
        self, folder: Path, files: list[Path], rows: torch.Tensor, reader: ImageReader
    ) -> None:
        self.folder, self.reader = folder, reader
        self.files = [files[int(i)] for i in rows]
        first = reader(self.files[0])  # (C, H, W)
        self._shape = torch.Size((len(self.files), *first.shape))

    @property
    def shape(self) -> torch.Size:
        return self._shape

    @property
    def dtype(self) -> torch.dtype:
        return torch.uint8

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: slice | torch.Tensor | list[int]) -> torch.Tensor:
        picked = (
            self.files[index] if isinstance(index, slice) else [self.files[int(i)] for i in index]
        )
        images = torch.empty((len(picked), *self._shape[1:]), dtype=torch.uint8)
        for i, path in enumerate(picked):
            pixels = self.reader(path)
            if pixels.shape != self._shape[1:]:  # changed since checked
                raise DataError(f"image {path} differs in size or mode from {self.files[0]}")
            images[i] = pixels
        return images

    def check(self, what: str, *, unit_interval_for: str | None) -> None:
        """Nothing more to check: 8-bit pixels are in range, and every image's size and
        mode were checked from its header when the folder was listed
        (:func:`pyrovae.data.folders.check_headers`)."""

    def is_binary(self) -> bool:
        return all(
            is_binary(self[start : start + CHECK_ROWS]) for start in range(0, len(self), CHECK_ROWS)
        )


def check_rows(rows: object, what: str, *, unit_interval_for: str | None) -> None:
    """Check streamed rows the way data read whole are checked (a pass over the file);
    float values must lie in [0, 1] where ``unit_interval_for`` names a likelihood."""
    assert isinstance(rows, (NpyRows, FolderRows))
    rows.check(what, unit_interval_for=unit_interval_for)


def rows_are_binary(rows: object) -> bool:
    """Whether every value of streamed rows is exactly 0 or 1 (a pass over the file)."""
    assert isinstance(rows, (NpyRows, FolderRows))
    return rows.is_binary()
