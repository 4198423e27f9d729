"""Cost of ``pyrovae evaluate``: importance-sampled log p(x) with K samples per image.

For each K (default 500 and 5000) a fresh child process loads the run,
takes the first ``--n`` Fashion-MNIST test images (binarized as the run
prepares them) and times :func:`pyrovae.reports.evaluate.evaluate` on them: the
IS log p(x) with K samples, the ELBO terms, active units and ELBO surgery
(no gaps). Reported per K:

- seconds, and data points x samples per second (n K / seconds);
- the time it would take on all 10,000 test images at that K, extrapolated
  linearly from that rate when ``--n`` is smaller (the cost is linear in the
  number of images: they are processed in independent batches);
- peak memory while evaluating: on CUDA ``torch.cuda.max_memory_allocated``,
  on CPU the peak RSS of the child (Linux ``VmHWM``, reset through
  ``/proc/self/clear_refs`` after loading the data, so the resident data set
  counts but loading does not) and the part above the RSS before the call.

Peak memory must not grow with K: samples are drawn in chunks whose size
depends on the batch, never on K.

Without ``--run`` a small model (MLP 400 hidden units, 16 latent units,
Bernoulli) is trained on Fashion-MNIST first, for ``--epochs`` epochs.

Run from the repository root::

    python benchmarks/evaluate.py                       # train, then n=1000, K=500 and 5000
    python benchmarks/evaluate.py --run runs/X --n 10000 --json out.json   # the full test set
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

FULL_TEST_SET = 10_000


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def worker(run_dir: str, n: int, k: int, device: str) -> dict[str, Any]:
    """Runs in a child process: one evaluation, its time and peak memory."""
    from pyrovae.api import load_run
    from pyrovae.reports.evaluate import evaluate

    run = load_run(run_dir, device=device)
    images = run.data().test[:n]
    evaluate(run.vae, images[:4], k=8)  # warm-up: first-call allocations and lazy imports
    dev = run.device
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    rss_before = _status_kib("VmRSS")
    reset = _reset_peak_rss()
    torch.manual_seed(0)
    started = time.perf_counter()
    result = evaluate(run.vae, images, k=k)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    row: dict[str, Any] = {
        "k": k,
        "n": images.shape[0],
        "seconds": seconds,
        "points_x_samples_per_s": images.shape[0] * k / seconds,
        "log_px": result.log_px,
        "log_px_stderr": result.log_px_stderr,
        "elbo": result.elbo,
        "device": str(dev),
        "threads": torch.get_num_threads(),
    }
    if dev.type == "cuda":
        row["peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
        row["peak_above_before_mib"] = (torch.cuda.max_memory_allocated() - before) / 2**20
    else:
        peak = _status_kib("VmHWM")
        row["peak_rss_mib"] = peak / 1024 if reset else None
        row["rss_before_mib"] = rss_before / 1024
        row["peak_above_before_mib"] = (peak - rss_before) / 1024 if reset else None
    return row


def train_small(out: Path, epochs: int, device: str) -> Path:
    from pyrovae.api import train
    from pyrovae.config import DataConfig, RunConfig, TrainConfig
    from pyrovae.model.spec import model_config

    config = RunConfig(
        data=DataConfig(dataset="fashion-mnist"),
        model=model_config(hidden=(400,), latent_dim=16),
        train=TrainConfig(epochs=epochs, batch_size=128, device=device),
    )
    started = time.perf_counter()
    train(config, out, progress=False)
    print(f"trained {out} in {time.perf_counter() - started:.0f} s")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=None, help="A trained run; default: train one.")
    parser.add_argument("--n", type=int, default=1000, help="Test images evaluated.")
    parser.add_argument("--k", type=int, nargs="+", default=[500, 5000])
    parser.add_argument("--epochs", type=int, default=3, help="Epochs of the model trained.")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", default=None, help="Write the results here.")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(worker(args.run, args.n, args.k[0], args.device)))
        return

    run_dir = Path(args.run) if args.run else None
    if run_dir is None:
        run_dir = train_small(Path(tempfile.mkdtemp()) / "fashion-bench", args.epochs, args.device)
    rows = []
    for k in args.k:
        command = [sys.executable, __file__, "--worker", "--run", str(run_dir)]
        command += ["--n", str(args.n), "--k", str(k), "--device", args.device]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        row = json.loads(output.strip().splitlines()[-1])
        row["extrapolated_seconds_10000"] = FULL_TEST_SET * k / row["points_x_samples_per_s"]
        rows.append(row)
        peak = row.get("peak_rss_mib", row.get("peak_mib"))
        print(
            f"K={k:>5}  n={row['n']:>5}  {row['seconds']:8.1f} s  "
            f"{row['points_x_samples_per_s']:>10.0f} points x samples/s  "
            f"10,000 images: {row['extrapolated_seconds_10000']:8.0f} s"
            f"{' (extrapolated)' if row['n'] < FULL_TEST_SET else ''}  "
            f"peak {peak:.0f} MiB (+{row['peak_above_before_mib']:.0f} MiB over before)  "
            f"log p(x) {row['log_px']:.2f} ± {row['log_px_stderr']:.2f}"
        )
    summary = {
        "run": str(run_dir),
        "machine": platform.platform(),
        "processor": platform.processor(),
        "torch": torch.__version__,
        "rows": rows,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
