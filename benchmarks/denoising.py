"""Reconstruction error of trained runs on their test set, from clean and from corrupted
inputs: an autoencoder against a VAE, each trained plainly and as a denoiser.

For each run given, on every test image x (prepared as the run prepares it):

- ``recon``: log p(x|z) with one z ~ q(z|x̃) per image (for an autoencoder
  z = f(x̃)), in nats per image, with its standard error over images (which
  includes the Monte Carlo noise of the one draw);
- ``mse``: the squared error between x and the likelihood's mean E[x|z],
  summed over pixels, with its standard error over images;

where x̃ = x (``clean``) or x̃ a draw of ``--corrupt`` (default ``mask:0.5``,
seeded). The likelihood always scores the clean x.

Run from the repository root::

    python benchmarks/denoising.py runs/vae runs/ae runs/dvae runs/dae --corrupt mask:0.5
"""

from __future__ import annotations

import argparse
import json
import math

import torch

import pyrovae
from pyrovae.data.pixels import to_unit_float
from pyrovae.model.corruption import parse_corruption


def _mean_stderr(values: torch.Tensor) -> tuple[float, float]:
    values = values.double()
    return values.mean().item(), values.std().item() / math.sqrt(values.numel())


@torch.no_grad()
def measure(run_dir: str, corrupt: str, seed: int) -> dict[str, object]:
    """The reconstruction figures of one run, from clean and from corrupted inputs."""
    run = pyrovae.load_run(run_dir, device="cpu")
    x = to_unit_float(run.data().test)  # (n, C, H, W)
    corruption = parse_corruption(corrupt)
    assert corruption is not None
    row: dict[str, object] = {
        "run": run_dir,
        "model": run.config.model.kind,
        "trained_with": run.config.train.corrupt or "none",
        "n": x.shape[0],
    }
    torch.manual_seed(seed)
    for name, x_in in (("clean", x), (corrupt, corruption(x))):
        px = run.vae.px(run.vae.qz(x_in).sample())
        recon = px.log_prob(x)  # (n,)
        mse = (px.mean - x).pow(2).flatten(1).sum(1)  # (n,)
        row[name] = {"recon": _mean_stderr(recon), "mse": _mean_stderr(mse)}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--corrupt", default="mask:0.5")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="Also write the rows here.")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = [measure(run, args.corrupt, args.seed) for run in args.runs]
    print(f"{'model':6} {'trained with':13} {'input':11} {'log p(x|z)':>18} {'squared error':>16}")
    for row in rows:
        for name in ("clean", args.corrupt):
            figures = row[name]
            assert isinstance(figures, dict)
            (recon, recon_se), (mse, mse_se) = figures["recon"], figures["mse"]
            print(
                f"{row['model']:6} {row['trained_with']:13} {name:11} "
                f"{recon:9.2f} ± {recon_se:5.2f} {mse:8.2f} ± {mse_se:5.2f}"
            )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(rows, handle, indent=2)


if __name__ == "__main__":
    main()
