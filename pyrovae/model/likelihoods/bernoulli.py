"""Bernoulli pixels, logits from the decoder: for binary (or binarized) images."""

from __future__ import annotations

import pyro.distributions as dist
import torch

from pyrovae.model.likelihoods.base import Likelihood


class BernoulliLikelihood(Likelihood):
    """Binary pixels: Bernoulli(sigmoid(decoded)); data are binarized for it."""

    name = "bernoulli"
    binary = True
    discrete = True

    def forward(self, decoded: torch.Tensor) -> dist.TorchDistribution:
        return dist.Bernoulli(logits=decoded).to_event(self.event_dims)
