"""Bernoulli pixels, logits from the decoder: for binary (or binarized) images."""

from __future__ import annotations

import pyro.distributions as dist
import torch
import torch.nn.functional as F

from pyrovae.model.likelihoods.base import Likelihood


class BinaryBernoulli(dist.Bernoulli):
    """Pyro's Bernoulli, with ``log_prob`` computed as log σ(l) - (1 - x) · l.

    That is torch's x · l - softplus(l) (what ``binary_cross_entropy_with_logits``
    computes), for every x in [0, 1], in one log-sigmoid and one fused
    multiply-add written in place: 12-13 against 17-19 ms on the
    (41, 100, 1, 28, 28) logits of an importance-sampling chunk on one CPU
    thread, where the decoder's product takes about 40. It is the likelihood's
    term in every ELBO, importance weight and gradient of a Bernoulli model.
    Intensities strictly between 0 and 1 are scored as torch scores them, a soft
    observation, when validation is off (as ``impute`` does for observed grey
    pixels); with validation on they raise, as for Pyro's Bernoulli.
    """

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        logits = self.logits
        if not value.is_floating_point():  # bool or integer pixels
            value = value.to(logits.dtype)
        log_p = F.logsigmoid(logits)  # log σ(l) = l - softplus(l)
        if value.dtype == log_p.dtype and log_p.shape == torch.broadcast_shapes(
            log_p.shape, value.shape
        ):
            return log_p.addcmul_(value - 1, logits)
        return torch.addcmul(log_p, value - 1, logits)  # value has more batch dimensions


class BernoulliLikelihood(Likelihood):
    """Binary pixels: Bernoulli(sigmoid(decoded)); data are binarized for it."""

    name = "bernoulli"
    binary = True
    discrete = True

    def forward(self, decoded: torch.Tensor) -> dist.TorchDistribution:
        return BinaryBernoulli(logits=decoded).to_event(self.event_dims)
