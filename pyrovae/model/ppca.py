"""Probabilistic PCA: the VAE whose answers are known exactly.

With z ~ N(0, I_L) and x | z ~ N(W z + b, sigma^2 I_D) (Tipping & Bishop
1999), the marginal is x ~ N(b, W W^T + sigma^2 I) and the posterior is
Gaussian with covariance sigma^2 M^{-1} and mean M^{-1} W^T (x - b), where
M = W^T W + sigma^2 I. :func:`linear_gaussian_vae` builds a pyrovae VAE whose
decoder is exactly this model, so estimators (ELBO, IWAE, importance-sampled
log p(x), NUTS, PSIS) can be checked against :class:`PPCA`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.distributions import MultivariateNormal

from pyrovae.model.spec import model_config
from pyrovae.model.vae import VAE


@dataclass
class PPCA:
    """The linear-Gaussian model x = W z + b + sigma * noise.

    Parameters
    ----------
    weight
        ``W``, ``(n_data_dims, n_latent)``.
    bias
        ``b``, ``(n_data_dims,)``.
    sigma
        Observation noise scale.
    """

    weight: torch.Tensor
    bias: torch.Tensor
    sigma: float

    @property
    def n_latent(self) -> int:
        return self.weight.shape[1]

    @property
    def n_dims(self) -> int:
        return self.weight.shape[0]

    def marginal(self) -> MultivariateNormal:
        """p(x) = N(b, W W^T + sigma^2 I)."""
        cov = self.weight @ self.weight.T + self.sigma**2 * torch.eye(self.n_dims)
        return MultivariateNormal(self.bias, covariance_matrix=cov)

    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log p(x) for ``x`` ``(batch, n_dims)`` -> ``(batch,)``."""
        return self.marginal().log_prob(x)

    def posterior(self, x: torch.Tensor) -> MultivariateNormal:
        """Exact p(z|x), batched over ``x`` ``(batch, n_dims)``."""
        m = self.weight.T @ self.weight + self.sigma**2 * torch.eye(self.n_latent)
        m_inv = torch.linalg.inv(m)
        loc = (x - self.bias) @ (m_inv @ self.weight.T).T  # (batch, n_latent)
        cov = self.sigma**2 * m_inv
        return MultivariateNormal(loc, covariance_matrix=cov.expand(x.shape[0], -1, -1))

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` draws of x ``(n, n_dims)``."""
        z = torch.randn(n, self.n_latent, generator=generator)
        noise = torch.randn(n, self.n_dims, generator=generator)
        return z @ self.weight.T + self.bias + self.sigma * noise

    @classmethod
    def random(cls, n_dims: int, n_latent: int, sigma: float = 0.5, seed: int = 0) -> PPCA:
        """A PPCA with correlated posterior: W's columns are far from orthogonal."""
        generator = torch.Generator().manual_seed(seed)
        weight = torch.randn(n_dims, n_latent, generator=generator)
        # Mixing the columns makes W^T W non-diagonal, so p(z|x) is correlated and
        # a mean-field q cannot match it exactly.
        mix = torch.eye(n_latent) + 0.8 * torch.ones(n_latent, n_latent)
        weight = weight @ mix
        bias = 0.1 * torch.randn(n_dims, generator=generator)
        return cls(weight=weight, bias=bias, sigma=sigma)


def linear_gaussian_vae(ppca: PPCA, **model_options: object) -> VAE:
    """A VAE whose decoder and likelihood are exactly ``ppca``'s p(x|z) and prior N(0, I).

    Data are shaped ``(batch, 1, 1, n_dims)``; the encoder and guide are
    linear (the ``linear`` network) and left at their initialization, so the
    amortized guide can represent the exact posterior's mean. Extra
    ``model_options`` are fields and component options, as
    :func:`~pyrovae.model.spec.model_config` takes them (e.g. ``guide="iaf"``).
    """
    options: dict[str, object] = {
        "likelihood": "gaussian",
        "obs_scale": ppca.sigma,
        "network": "linear",
        "hidden": (max(ppca.n_latent, 8),),
        "latent_dim": ppca.n_latent,
        "data_shape": (1, 1, ppca.n_dims),
        **model_options,
    }
    vae = VAE(model_config(**options))
    decoder = vae.decoder.net
    assert isinstance(decoder, torch.nn.Linear)
    with torch.no_grad():
        decoder.weight.copy_(ppca.weight)
        decoder.bias.copy_(ppca.bias)
    return vae
