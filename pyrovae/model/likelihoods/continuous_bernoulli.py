"""Intensities in [0, 1] with the normalizing constant of Loaiza-Ganem &
Cunningham (2019), "The continuous Bernoulli: fixing a pervasive error in
variational autoencoders".
"""

from __future__ import annotations

import pyro.distributions as dist
import torch

from pyrovae.model.likelihoods.base import Likelihood


class ContinuousBernoulliLikelihood(Likelihood):
    """Intensities in [0, 1]: the continuous Bernoulli, logits from the decoder."""

    name = "continuous-bernoulli"

    def forward(self, decoded: torch.Tensor) -> dist.TorchDistribution:
        return dist.ContinuousBernoulli(logits=decoded).to_event(self.event_dims)
