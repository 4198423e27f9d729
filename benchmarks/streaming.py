"""Streaming memory: one epoch on a uint8 ``.npy`` larger than the budget, and its peak RSS.

Writes a ``.npy`` of random 28 x 28 uint8 images of the given size (default
4 GB), trains one epoch on it with ``pyrovae train --stream yes`` in a child
process, and prints the child's peak resident set size
(``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss``: the largest of the
training process and its data-loader workers) and the wall time, against the
target of under 1.5 GB. The file is deleted afterwards (``--keep`` keeps it).

The run is small on purpose (``--hidden 32 --latent-dim 4 --batch-size 1024``,
1% of the file held out for test): what is measured is the data path, not
the model.

Run from the repository root::

    python benchmarks/streaming.py                    # 4 GB (needs 4 GB of free disk)
    python benchmarks/streaming.py --gigabytes 0.2    # a quick check
    python benchmarks/streaming.py --device cuda --dir /scratch
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

#: The memory the streamed epoch must stay under.
TARGET_GB = 1.5

#: Pixels of one image.
IMAGE_SHAPE = (28, 28)

#: Images written at once: the writer holds about 64 MB.
CHUNK_IMAGES = 1 << 16


def write_npy(path: Path, gigabytes: float, seed: int = 0) -> int:
    """A ``.npy`` of ``gigabytes`` of random uint8 images, written a chunk at a time; its rows.

    Written with ``write``, not through a mapping (``open_memmap``): this process's
    peak RSS is inherited by the child it starts (``ru_maxrss`` of a child counts
    the parent's memory at fork), so it must stay small; a mapping would put the
    whole file in it.
    """
    n = max(2, int(gigabytes * 1e9) // int(np.prod(IMAGE_SHAPE)))
    rng = np.random.default_rng(seed)
    header = {"descr": "|u1", "fortran_order": False, "shape": (n, *IMAGE_SHAPE)}
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, header)
        for start in range(0, n, CHUNK_IMAGES):
            stop = min(n, start + CHUNK_IMAGES)
            handle.write(rng.integers(0, 256, size=(stop - start, *IMAGE_SHAPE), dtype=np.uint8))
    return n


def train_one_epoch(path: Path, run_dir: Path, device: str) -> tuple[float, float, int]:
    """Train one streamed epoch in a child process: (peak RSS in GB, seconds, exit status)."""
    command = [
        sys.executable, "-m", "pyrovae", "train", "--dataset", str(path), "--stream", "yes",
        "--epochs", "1", "--hidden", "32", "--latent-dim", "4", "--batch-size", "1024",
        "--test-fraction", "0.01", "--device", device, "--no-progress", "--out", str(run_dir),
    ]  # fmt: skip
    print("$", " ".join(command), flush=True)
    started = time.perf_counter()
    status = subprocess.run(command, check=False).returncode
    seconds = time.perf_counter() - started
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
    own_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"(this process's own peak RSS, a floor of the child's figure: {own_kb / 1e6:.2f} GB)")
    return peak_kb * 1024 / 1e9, seconds, status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gigabytes", type=float, default=4.0, help="size of the .npy file")
    parser.add_argument("--dir", type=Path, default=None, help="where to write it (a temp dir)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    parser.add_argument("--keep", action="store_true", help="keep the file and the run")
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="pyrovae-streaming-", dir=args.dir))
    try:
        path = folder / "pixels.npy"
        free = shutil.disk_usage(folder).free / 1e9
        if free < args.gigabytes * 1.05:
            print(f"only {free:.1f} GB free in {folder}: pass --dir or fewer --gigabytes")
            return 2
        started = time.perf_counter()
        n = write_npy(path, args.gigabytes)
        size = os.path.getsize(path) / 1e9
        print(f"wrote {path}: {n} images of {IMAGE_SHAPE}, {size:.2f} GB, "
              f"in {time.perf_counter() - started:.0f} s")  # fmt: skip
        peak, seconds, status = train_one_epoch(path, folder / "run", args.device)
        verdict = "met" if peak < TARGET_GB else "NOT met"
        print(f"one streamed epoch on {size:.2f} GB: peak RSS {peak:.2f} GB "
              f"(target < {TARGET_GB} GB: {verdict}), wall time {seconds:.0f} s, "
              f"exit status {status}")  # fmt: skip
        return status
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
