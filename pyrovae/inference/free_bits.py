"""Free bits: a floor λ under the KL of each latent dimension (Kingma et al. 2016).

Kingma, Salimans, Jozefowicz, Chen, Sutskever & Welling (2016), "Improved
Variational Inference with Inverse Autoregressive Flow", section C.8, train on

L_λ = E_x[E_q[log p(x|z)]] - Σ_j max(λ, E_x[KL(q(z_j|x) || p(z_j))])

with the KL of dimension j averaged over the minibatch: a dimension whose
average KL is below λ nats costs λ, whatever it does, so the optimizer has no
reason to collapse it onto the prior. This needs the KL per dimension in
closed form: q(z|x) and p(z) must both be factorized (``Independent`` over
the latent dimensions) with a KL torch registers for their factors, as for
the mean-field Gaussian guide and the standard normal prior.

The training step adds :func:`free_bits_excess` (times β) to the negative
ELBO it differentiates; the ELBO it reports is the true one.
"""

from __future__ import annotations

import torch
from torch.distributions import Distribution, Independent, kl_divergence


def per_dimension_kl(qz: Distribution, pz: Distribution) -> torch.Tensor:
    """KL(q(z_j|x) || p(z_j)) for each latent dimension, ``(*batch, n_latent)``.

    Raises
    ------
    NotImplementedError
        When q or p is not factorized over the latent dimensions, or torch has
        no closed-form KL for their factors.
    """
    if not (isinstance(qz, Independent) and isinstance(pz, Independent)):
        raise NotImplementedError("q(z|x) and p(z) must be factorized over the latent dimensions")
    if qz.reinterpreted_batch_ndims != 1 or pz.reinterpreted_batch_ndims != 1:
        raise NotImplementedError("q(z|x) and p(z) must have one event dimension")
    return kl_divergence(qz.base_dist, pz.base_dist)  # (*batch, n_latent)


def free_bits_kl(kl: torch.Tensor, free_bits: float) -> torch.Tensor:
    """Σ_j max(λ, mean KL_j) times the number of data points: the KL term of L_λ
    summed over the batch, as the loss is. ``kl`` is ``(*batch, n_latent)``; every
    leading dimension (particles, data points) is averaged over, and the result is
    scaled by the last batch dimension's size (the data points)."""
    per_dim = kl.reshape(-1, kl.shape[-1]).mean(0)  # (n_latent,)
    n = kl.shape[-2] if kl.dim() > 1 else 1
    return torch.clamp(per_dim, min=free_bits).sum() * n


def free_bits_excess(qz: Distribution, pz: Distribution, free_bits: float) -> torch.Tensor:
    """What free bits add to the summed negative ELBO of a batch: the KL term of
    L_λ minus the plain analytic KL (both summed over the batch, averaged over
    particles). Differentiable; never negative."""
    kl = per_dimension_kl(qz, pz)  # (*batch, n_latent)
    n_draws = kl.reshape(-1, kl.shape[-1]).shape[0]
    n = kl.shape[-2] if kl.dim() > 1 else 1
    plain = kl.sum() * n / n_draws  # summed over the data points, averaged over particles
    return free_bits_kl(kl, free_bits) - plain
