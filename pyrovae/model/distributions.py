"""Pyro distributions and transforms with cheaper densities: the same values and
gradients as Pyro's, in fewer tensor operations.

A training step of a VAE of MLP size on a GPU is bound by how many kernels it
launches, not by arithmetic, so every operation of its loss counts. Pyro's
generic forms spend some that the ELBO does not need:

- :class:`ReparameterizedNormal`: log q(z) at the guide's own draw
  z = mu + sigma * eps is -eps^2 / 2 - log sigma - log sqrt(2 pi) (the standard
  normal noise is kept from the draw, as Pyro's transforms keep their
  inverses), not (z - mu)^2 / (2 sigma^2) recomputed from z; the two are the
  same function of the parameters, so their gradients are the same too;
- :class:`StandardNormal`: N(0, 1), whose density needs no location or scale,
  nor does the KL divergence of a Normal from it;
- :class:`Reverse`: the reversal of the coordinates between flow layers as a
  flip, whose gradient is a flip, where a general permutation scatters;
- :class:`FlowDistribution`: a flow whose density skips the log-determinants
  of permutations, which are 0.

The savings are largest for flow guides (``benchmarks/train_throughput.py
--kernels`` counts the operations of a step beside a plain PyTorch loop).
"""

from __future__ import annotations

import math
from typing import Any

import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
from torch.distributions import register_kl
from torch.distributions.utils import _standard_normal, _sum_rightmost

#: log sqrt(2 pi), the normalizing constant of a standard normal density.
LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


class ReparameterizedNormal(dist.Normal):
    """Normal(loc, scale) whose :meth:`log_prob` at its latest :meth:`rsample` reads
    the standard normal noise of that draw.

    Any other value is scored by the generic form: the draw of an earlier call, a
    copy, the draw changed in place since, or a draw made without gradients and
    scored with them (the shortcut's gradient is that of the reparameterized draw,
    -log sigma; the generic form's, at a fixed value, is the score function). The
    draws consume the random stream as Pyro's Normal does.
    """

    #: The latest draw: its value, its noise, the value's version (in-place changes
    #: count it up) and whether gradients were on.
    _draw: tuple[torch.Tensor, torch.Tensor, int, bool] | None = None

    def rsample(self, sample_shape: Any = ()) -> torch.Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        eps = _standard_normal(shape, dtype=self.loc.dtype, device=self.loc.device)
        value = self.loc + eps * self.scale
        self._draw = (value, eps, value._version, torch.is_grad_enabled())
        return value

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        draw = self._draw
        if (
            draw is None
            or value is not draw[0]
            or value._version != draw[2]
            or (torch.is_grad_enabled() and not draw[3])
        ):
            return super().log_prob(value)
        return -0.5 * draw[1].pow(2) - self.scale.log() - LOG_SQRT_2PI


class StandardNormal(dist.Normal):
    """Normal(0, 1), made from a location of zeros and a scale of ones (its batch
    shape), whose :meth:`log_prob` is -value^2 / 2 - log sqrt(2 pi).

    The location and scale must be 0 and 1: the density and the KL divergence from
    it do not read them (checking them would read them back from a GPU every step).
    The priors build it from buffers of zeros and ones, and a prior at another
    temperature from a plain Normal.
    """

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        shape = torch.broadcast_shapes(value.shape, self.batch_shape)
        return (-0.5 * value.pow(2) - LOG_SQRT_2PI).expand(shape)


@register_kl(dist.Normal, StandardNormal)
def _kl_normal_standard_normal(q: dist.Normal, p: StandardNormal) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, 1)) = (mu^2 + sigma^2 - 1) / 2 - log sigma, elementwise."""
    shape = torch.broadcast_shapes(q.batch_shape, p.batch_shape)
    return (0.5 * (q.loc.pow(2) + q.scale.pow(2) - 1.0) - q.scale.log()).expand(shape)


class Reverse(T.Permute):
    """The coordinates of the last dimension in reverse order (a
    :class:`~pyro.distributions.transforms.Permute` by ``permutation``, which must
    be ``n - 1, ..., 0``), applied as a flip."""

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        return x.flip(-1)

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y.flip(-1)


class FlowDistribution(dist.TransformedDistribution):
    """A base distribution pushed through transforms, whose :meth:`log_prob` leaves
    out the log-determinants of permutations (0: they only reorder coordinates)."""

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        event_dim = len(self.event_shape)
        log_prob: torch.Tensor | float = 0.0
        y = value
        for transform in reversed(self.transforms):
            x = transform.inv(y)
            event_dim += transform.domain.event_dim - transform.codomain.event_dim
            if not isinstance(transform, T.Permute):
                log_det = transform.log_abs_det_jacobian(x, y)
                log_prob = log_prob - _sum_rightmost(
                    log_det, event_dim - transform.domain.event_dim
                )
            y = x
        base = self.base_dist.log_prob(y)
        return log_prob + _sum_rightmost(base, event_dim - len(self.base_dist.event_shape))
