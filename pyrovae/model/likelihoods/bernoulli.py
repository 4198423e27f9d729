"""Bernoulli pixels, logits from the decoder: for binary (or binarized) images."""

from __future__ import annotations

import pyro.distributions as dist
import torch

from pyrovae.model.likelihoods.base import IMAGE_DIMS, LIKELIHOODS, Likelihood


@LIKELIHOODS.register("bernoulli")
class BernoulliLikelihood(Likelihood):
    binary = True
    discrete = True

    def forward(self, decoded: torch.Tensor) -> dist.TorchDistribution:
        return dist.Bernoulli(logits=decoded).to_event(IMAGE_DIMS)
