"""Intensities in [0, 1] with the normalizing constant of Loaiza-Ganem &
Cunningham (2019), "The continuous Bernoulli: fixing a pervasive error in
variational autoencoders".
"""

from __future__ import annotations

import pyro.distributions as dist
import torch

from pyrovae.model.likelihoods.base import IMAGE_DIMS, LIKELIHOODS, Likelihood


@LIKELIHOODS.register("continuous-bernoulli")
class ContinuousBernoulliLikelihood(Likelihood):
    def forward(self, decoded: torch.Tensor) -> dist.TorchDistribution:
        return dist.ContinuousBernoulli(logits=decoded).to_event(IMAGE_DIMS)
