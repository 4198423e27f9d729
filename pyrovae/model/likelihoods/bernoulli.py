"""Bernoulli pixels, logits from the decoder: for binary (or binarized) images."""

from __future__ import annotations

import pyro.distributions as dist
import torch
import torch.nn.functional as F

from pyrovae.model.likelihoods.base import Likelihood


class BinaryBernoulli(dist.Bernoulli):
    """Pyro's Bernoulli, with ``log_prob`` computed as log σ((2x - 1) · logits).

    On the support {0, 1} this is torch's x · l - softplus(l) (what
    ``binary_cross_entropy_with_logits`` computes) to float rounding, in one
    product and one log-sigmoid: 13 against 17-19 ms on the (41, 100, 1, 28, 28)
    logits of an importance-sampling chunk on one CPU thread, where the
    decoder's product takes about 40. It is the likelihood's term in every
    ELBO, importance weight and gradient of a Bernoulli model.

    Values outside {0, 1} are no observation of a Bernoulli: with validation on
    (Pyro's default) they raise as they do for Pyro's Bernoulli; with it off,
    their log-probability is that of the sign of x - 1/2 scaled by |2x - 1|,
    not torch's relaxation x · l - softplus(l).
    """

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        if not value.is_floating_point():  # bool or integer pixels
            value = value.to(self.logits.dtype)
        return F.logsigmoid(self.logits * (2 * value - 1))


class BernoulliLikelihood(Likelihood):
    """Binary pixels: Bernoulli(sigmoid(decoded)); data are binarized for it."""

    name = "bernoulli"
    binary = True
    discrete = True

    def forward(self, decoded: torch.Tensor) -> dist.TorchDistribution:
        return BinaryBernoulli(logits=decoded).to_event(self.event_dims)
