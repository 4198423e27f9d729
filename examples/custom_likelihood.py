"""Add a likelihood from your own code: one registered class, no other edit.

A Laplace observation model for intensities, registered as "laplace"; the
trainer, sampling and the config pick it up by name.

Run: python examples/custom_likelihood.py [--epochs N]
"""

from __future__ import annotations

import argparse

import pyro.distributions as dist
import torch
from torch import nn

import pyrovae
from pyrovae.config import ModelConfig, RunConfig, TrainConfig
from pyrovae.model.likelihoods import LIKELIHOODS, Likelihood


@LIKELIHOODS.register("laplace")
class LaplaceLikelihood(Likelihood):
    """Laplace(decoded, b) per pixel with one learned scale b."""

    def __init__(self, image_shape: tuple[int, int, int], config: ModelConfig) -> None:
        super().__init__(image_shape, config)
        self.log_scale = nn.Parameter(torch.tensor(-2.0))

    def forward(self, decoded: torch.Tensor) -> dist.TorchDistribution:
        scale = self.log_scale.exp().expand_as(decoded)
        return dist.Laplace(decoded, scale).to_event(3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--out", default="runs/laplace")
    args = parser.parse_args()
    config = RunConfig(
        model=ModelConfig(likelihood="laplace", hidden=(256,), latent_dim=8),
        train=TrainConfig(epochs=args.epochs),
    )
    result = pyrovae.train(config, out=args.out)
    print(f"test ELBO: {result.final['test_elbo']:.2f} nats per image")


if __name__ == "__main__":
    main()
