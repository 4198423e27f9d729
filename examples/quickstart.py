"""Train a VAE on the bundled digits, then sample and reconstruct, from Python.

Run: python examples/quickstart.py [--epochs N]
"""

from __future__ import annotations

import argparse

import pyrovae
from pyrovae.reports.figures import save_grid, save_reconstructions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--out", default="runs/quickstart")
    args = parser.parse_args()

    result = pyrovae.train(
        out=args.out,
        dataset="digits",
        likelihood="bernoulli",
        hidden=256,
        latent_dim=8,
        epochs=args.epochs,
        kl_warmup=min(5, args.epochs),
    )
    print(f"test ELBO after {args.epochs} epochs: {result.final['test_elbo']:.2f} nats")

    run = pyrovae.load_run(result.run_dir)
    print("wrote", save_grid(pyrovae.sample(run, n=64, temperature=0.8), run.run_dir / "cool.png"))
    originals, recons = pyrovae.reconstruct(run, n=8)
    print("wrote", save_reconstructions(originals, recons, run.run_dir / "pairs.png"))


if __name__ == "__main__":
    main()
