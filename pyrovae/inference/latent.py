"""How the latent space is used: posterior means and active units.

Burda et al. (2016) call unit u active when Cov_x(E_q[z_u|x]) exceeds 0.01.
"""

from __future__ import annotations

import torch
from torch.distributions import Distribution

from pyrovae.data.pixels import to_unit_float
from pyrovae.inference.importance import index_batches
from pyrovae.model.vae import VAE
from pyrovae.runtime import eval_mode, module_device, progress_bar

#: Burda et al. (2016) call unit u active when Cov_x(E_q[z_u|x]) exceeds this.
ACTIVE_UNIT_THRESHOLD = 0.01

#: Draws of q(z|x) per image for E_q[z|x] when the guide has no closed-form mean.
#: Their noise, Var_q[z_u] / n, is subtracted from Cov_x, so a few suffice.
MEAN_DRAWS = 100


def posterior_mean(qz: Distribution, n: int = 64) -> torch.Tensor:
    """E_q[z]: the closed form when the distribution has one, else a mean of ``n`` draws."""
    return posterior_mean_and_noise(qz, n)[0]


def posterior_mean_and_noise(qz: Distribution, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """E_q[z] as :func:`posterior_mean`, and the Monte Carlo variance of that estimate
    (Var_q[z] / n; zero for the closed form), both ``(batch, n_latent)``."""
    try:
        mean = qz.mean
        return mean, torch.zeros_like(mean)
    except NotImplementedError:
        draws = qz.sample((n,))  # (n, batch, n_latent)
        return draws.mean(0), draws.var(0) / n


@torch.no_grad()
def unit_variances(
    vae: VAE, images: torch.Tensor, batch_size: int = 100, progress: bool = False
) -> torch.Tensor:
    """Cov_x(E_q[z_u|x]) of each latent unit over ``images``, ``(n_latent,)`` float64."""
    device = module_device(vae)
    means, noise = [], []
    with eval_mode(vae):
        for index in progress_bar(
            list(index_batches(images, batch_size)), "active units", progress, unit="batch"
        ):
            x = to_unit_float(images[index].to(device))
            mean, mean_noise = posterior_mean_and_noise(vae.qz(x), MEAN_DRAWS)
            means.append(mean.double())  # (batch, n_latent)
            noise.append(mean_noise.double())  # (batch, n_latent)
    # Sampled means (flow guides) spread by Var_q[z_u] / n even for a unit that
    # ignores x; subtracting that noise keeps collapsed units below the threshold.
    return (torch.cat(means).var(dim=0) - torch.cat(noise).mean(0)).clamp(min=0)
