"""Paired comparison of trained runs: per-image log p(x) on the same test images.

``pyrovae evaluate`` gives each run's mean log p(x) with a standard error over
images, which is dominated by how much images differ from each other; two
runs scored on the same images differ by far less than that. This script
scores the first ``-n`` test images of each run (as ``pyrovae evaluate`` takes
them) by importance sampling with q(z|x) as proposal
(:func:`pyrovae.inference.importance.importance_log_marginal`, ``-k`` samples
per image) and prints each run's mean and its paired difference to the first.

Usage
-----
    python benchmarks/paired.py RUN_A RUN_B [...] -k 200 -n 1000 --threads 1
"""

from __future__ import annotations

import argparse
import math

import torch

from pyrovae.api import load_run
from pyrovae.inference.importance import importance_log_marginal


def per_image_log_px(run_dir: str, k: int, n: int, seed: int) -> torch.Tensor:
    run = load_run(run_dir, device="cpu")
    images, _ = run.split("test")
    torch.manual_seed(seed)
    return importance_log_marginal(run.vae, images[:n], k=k).double()  # (n,)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("-k", type=int, default=200)
    parser.add_argument("-n", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    scores = [per_image_log_px(run, args.k, args.n, args.seed) for run in args.runs]
    print(f"| run | log p(x), IS K={args.k} | vs {args.runs[0]} (paired) |")
    print("|---|---|---|")
    for run, score in zip(args.runs, scores, strict=True):
        diff = score - scores[0]
        se, diff_se = (float(v.std() / math.sqrt(len(v))) for v in (score, diff))
        print(f"| {run} | {float(score.mean()):.2f} ± {se:.2f} | "
              f"{float(diff.mean()):+.2f} ± {diff_se:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
