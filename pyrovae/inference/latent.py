"""How the latent space is used: posterior means and active units.

Burda et al. (2016) call unit u active when Cov_x(E_q[z_u|x]) exceeds 0.01.
"""

from __future__ import annotations

from typing import NamedTuple

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


class UnitVariances(NamedTuple):
    """Cov_x(E_q[z_u|x]) per latent unit and its Monte Carlo standard error (zero where
    q has a closed-form mean), both ``(n_latent,)`` float64."""

    variances: torch.Tensor
    mc_stderr: torch.Tensor


@torch.no_grad()
def unit_variances(
    vae: VAE, images: torch.Tensor, batch_size: int = 100, progress: bool = False
) -> UnitVariances:
    """Cov_x(E_q[z_u|x]) of each latent unit over ``images``, with its Monte Carlo
    standard error.

    With sampled means m_i = E_q[z|x_i] + e_i, Var(e_i) = w_i = Var_q[z|x_i] / n, the
    estimate is V = S^2 - mean(w), S^2 the spread of the m_i over the N images. Its
    Monte Carlo variance, the images fixed, is to second order
    sum_i 4 ((m_i - m)^2 - w_i) w_i / (N - 1)^2 + 2 sum_i w_i^2 / (N - 1)^2 (the first
    term the delta method's, (m_i - m)^2 less the w_i it overstates E_q's spread by;
    the second, the noise's own spread, is what remains for a unit that ignores x; the
    noise of the estimated w_i, about 2 / n of the second, is neglected). Both are
    Gaussian noise's; V itself is clamped at 0.
    """
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
    m, w = torch.cat(means), torch.cat(noise)  # (N, n_latent)
    dof = max(m.shape[0] - 1, 1)
    # Sampled means (flow guides) spread by Var_q[z_u] / n even for a unit that
    # ignores x; subtracting that noise keeps collapsed units below the threshold.
    variances = (m.var(dim=0) - w.mean(0)).clamp(min=0)
    # (m_i - m)^2 overstates (E_q[z|x_i] - its mean)^2 by about w_i: taken off.
    # Clamped as a sum, not per image: a unit that ignores x keeps the second term alone.
    spread = (4 * (((m - m.mean(0)).square() - w) * w).sum(0)).clamp(min=0) / dof**2
    stderr = (spread + 2 * w.square().sum(0) / dof**2).sqrt()
    return UnitVariances(variances, stderr)
