"""Time to quality: seconds of training until test log p(x) reaches a target.

Trains ``pyrovae train --preset PRESET`` on Fashion-MNIST (dynamically
binarized, MLP 784-400-50, batch ``--batch-size``) in chunks of ``--chunk``
epochs (``--resume`` between them), and after each chunk scores the run with
``benchmarks/quality.py``'s one evaluator: importance sampling with K = ``-k``
on the first ``--test-size`` test images (binarized once, seed 0), on the
training device. It stops at the first chunk whose log p(x) reaches
``--target`` (default -235 nats), or when ``--budget`` seconds of training are
spent, and prints one line per chunk and a JSON summary.

"Seconds of training" are the run's training-step seconds (``seconds`` in
``metrics.jsonl``); its test ELBO, checkpoints, the scoring and the start of
each chunk's process come on top, and with ``--train-option=--compile`` each
chunk compiles again inside its first steps. A chunk boundary makes the figure
an upper bound by up to a chunk's time. ``best`` sets an EMA of the weights, so
its scored model is the average, which lags the trained weights by about a
tenth of the steps early on and by 1000 steps later.

Usage, from the repository root::

    python benchmarks/time_to_quality.py --device cuda                 # what gpu.sh runs
    python benchmarks/time_to_quality.py --device cpu --budget 60 --chunk 1 --test-size 200 -k 100
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import LATENT, importance_log_px, pyrovae_scorer, read_idx  # noqa: E402

from pyrovae.api import read_metrics  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--out", type=Path, default=Path("runs/time-to-quality"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--preset", default="best", help="pyrovae train --preset")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--chunk", type=int, default=5, help="epochs between scorings")
    parser.add_argument("--budget", type=float, default=150.0, help="seconds of training at most")
    parser.add_argument("--target", type=float, default=-235.0, help="log p(x), nats per image")
    parser.add_argument("-k", type=int, default=1000, help="importance samples per image")
    parser.add_argument("--test-size", type=int, default=2000)
    parser.add_argument("--eval-size", type=int, default=1000, help="the run's own test ELBO")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--train-option", action="append", default=[], metavar="OPTION",
        help="more train options, e.g. --train-option=--precision=bf16 (repeatable)",
    )  # fmt: skip
    return parser.parse_args()


def train_chunk(args: argparse.Namespace, run: Path, epochs: int) -> None:
    """Train (or resume) the run to ``epochs`` epochs in all, in a child process."""
    if (run / "checkpoint.pt").exists():
        command = ["train", "--resume", str(run), "--epochs", str(epochs)]
    else:
        command = [
            "train", "--preset", args.preset, "--dataset", "fashion-mnist",
            "--data-dir", args.data_dir, "--latent-dim", str(LATENT), "--device", args.device,
            "--batch-size", str(args.batch_size), "--epochs", str(epochs),
            "--eval-every", str(args.chunk), "--eval-size", str(args.eval_size),
            "--seed", str(args.seed), "--out", str(run), *args.train_option,
        ]  # fmt: skip
    subprocess.run([sys.executable, "-m", "pyrovae", *command, "--no-progress", "--quiet"],
                   check=True)  # fmt: skip


def score(run: Path, test: torch.Tensor, args: argparse.Namespace) -> tuple[float, float]:
    """Mean log p(x) over the test images and its standard error."""
    log_px, _ = importance_log_px(pyrovae_scorer(run, args.device), test, args.k, args.seed)
    return log_px.mean().item(), (log_px.std() / log_px.shape[0] ** 0.5).item()


def main() -> None:
    args = parse_args()
    generator = torch.Generator().manual_seed(0)
    test = torch.bernoulli(read_idx(args.data_dir, "t10k")[: args.test_size], generator=generator)
    test = test.to(args.device)
    run = args.out / f"{args.preset}-{args.device}"
    if run.exists():
        raise SystemExit(f"{run} exists: remove it or give another --out")
    name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "CPU"
    print(
        f"time to log p(x) >= {args.target:g}: preset {args.preset}, batch {args.batch_size}, "
        f"{args.device} ({name}), K={args.k} on {test.shape[0]} test images",
        flush=True,
    )
    lines, reached, epochs, seconds = [], None, 0, 0.0
    while seconds < args.budget:
        epochs += args.chunk
        train_chunk(args, run, epochs)
        rows = read_metrics(run)
        seconds, last = sum(row["seconds"] for row in rows), rows[-1]
        started = time.perf_counter()
        log_px, se = score(run, test, args)
        line = {"epochs": epochs, "train_seconds": round(seconds, 1), "log_px": round(log_px, 2),
                "log_px_se": round(se, 2), "score_seconds": round(time.perf_counter() - started, 1),
                "images_per_s": round(last["images_per_s"])}  # fmt: skip
        lines.append(line)
        print(json.dumps(line), flush=True)
        if log_px >= args.target:
            reached = line
            break
    summary = {"target": args.target, "reached": reached is not None,
               "train_seconds": reached["train_seconds"] if reached else None,
               "epochs": reached["epochs"] if reached else None, "device": name,
               "preset": args.preset, "chunks": lines}  # fmt: skip
    print(json.dumps(summary))
    if reached:
        print(
            f"reached {reached['log_px']:.2f} ± {reached['log_px_se']:.2f} nats after "
            f"{reached['train_seconds']:.0f} s of training ({reached['epochs']} epochs)"
        )
    else:
        print(f"not reached within {args.budget:g} s: best {max(r['log_px'] for r in lines):.2f}")


if __name__ == "__main__":
    main()
