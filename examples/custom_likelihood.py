"""Add a likelihood from your own code: one class that declares itself, registered.

A Laplace observation model for intensities: it declares its name, its one
option (the starting scale) and how it is saved (its parameters). Registered
at run time, it trains from the API and ``pyrovae components`` would list it;
a run that uses it needs the same registration before it is loaded again. To
make it available to the command line and to every session, package it as a
plugin instead: see ``examples/plugin/``.

Run: python examples/custom_likelihood.py [--epochs N]
"""

from __future__ import annotations

import argparse
import math

import pyro.distributions as dist
import torch
from torch import nn

import pyrovae
from pyrovae.components import Option, positive_float
from pyrovae.model.context import ModelContext
from pyrovae.model.likelihoods import LIKELIHOODS, Likelihood


class LaplaceLikelihood(Likelihood):
    """Intensities: Laplace(decoded, b) per pixel with one learned scale b."""

    name = "laplace-example"
    options = (Option("initial_scale", 0.1, "Starting Laplace scale b.", positive_float),)

    def __init__(self, context: ModelContext, *, initial_scale: float = 0.1) -> None:
        super().__init__(context)
        self.log_scale = nn.Parameter(torch.tensor(math.log(initial_scale)))

    def forward(self, decoded: torch.Tensor) -> dist.TorchDistribution:
        scale = self.log_scale.exp().expand_as(decoded)
        return dist.Laplace(decoded, scale).to_event(self.event_dims)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--out", default="runs/laplace")
    args = parser.parse_args()
    LIKELIHOODS.register(LaplaceLikelihood)
    result = pyrovae.train(
        out=args.out,
        likelihood="laplace-example",
        initial_scale=0.2,
        hidden=256,
        latent_dim=8,
        epochs=args.epochs,
    )
    print(f"test ELBO: {result.final['test_elbo']:.2f} nats per image")
    run = pyrovae.load_run(result.run_dir)  # rebuilt from the registration above
    print(f"learned Laplace scale: {run.vae.likelihood.log_scale.exp().item():.3f}")


if __name__ == "__main__":
    main()
