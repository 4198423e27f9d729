"""Missing values in the model: the masked likelihood against probabilistic PCA's exact
marginal of the observed dimensions, the ELBO over observed values, the encoder's mask."""

from __future__ import annotations

import pytest
import torch
from pyro.infer import TraceMeanField_ELBO
from torch.distributions import Normal, kl_divergence

from pyrovae.model.networks.observed import ObservedInput
from pyrovae.model.ppca import PPCA, linear_gaussian_vae
from pyrovae.model.spec import model_config
from pyrovae.model.vae import VAE
from pyrovae.runtime import forked_rng
from pyrovae.training.step import TrainStep, make_optimizer

N_DIMS, N_LATENT = 6, 2


def _incomplete(ppca: PPCA, n: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Points ``(n, 1, 1, D)`` and a mask of observed values, at least one per point."""
    x = ppca.sample(n, torch.Generator().manual_seed(1)).reshape(n, 1, 1, N_DIMS)
    observed = torch.rand(x.shape, generator=torch.Generator().manual_seed(2)) < 0.5
    observed[..., 0] = True
    return x, observed


def _exact_observed(ppca: PPCA, x: torch.Tensor, observed: torch.Tensor, i: int) -> PPCA:
    keep = observed[i].reshape(-1)
    return PPCA(ppca.weight[keep], ppca.bias[keep], ppca.sigma), x[i].reshape(-1)[keep]


@pytest.mark.parametrize("nan", [False, True], ids=["explicit-mask", "nan-in-x"])
def test_masked_log_joint_gives_the_exact_marginal_of_the_observed_dimensions(nan):
    # Bayes: log p(z) + log p(x_obs|z) - log p(z|x_obs) = log p(x_obs) for every z, where
    # p(x_obs) = N(b_o, W_o W_o^T + s^2 I) is pPCA restricted to the observed dimensions.
    # In float64, so that the identity holds to rounding (float32 leaves ~1e-4 nats).
    single = PPCA.random(N_DIMS, N_LATENT, sigma=0.5)
    vae = linear_gaussian_vae(single, missing=nan).double()
    x, observed = _incomplete(single)
    x = x.double()
    ppca = PPCA(single.weight.double(), single.bias.double(), single.sigma)
    z = torch.randn(3, x.shape[0], N_LATENT, dtype=torch.float64)
    with torch.no_grad():
        if nan:
            log_joint = vae.log_joint(torch.where(observed, x, torch.nan), z)
        else:
            log_joint = vae.log_joint(x, z, observed)
    for i in range(x.shape[0]):
        sub, x_obs = _exact_observed(ppca, x, observed, i)
        exact = sub.log_marginal(x_obs[None])  # (1,)
        log_post = sub.posterior(x_obs[None].expand(3, -1)).log_prob(z[:, i])
        torch.testing.assert_close(log_joint[:, i] - log_post, exact.expand(3))


def test_missing_values_do_not_change_the_log_likelihood():
    ppca = PPCA.random(N_DIMS, N_LATENT)
    vae = linear_gaussian_vae(ppca)
    x, observed = _incomplete(ppca)
    z = torch.randn(x.shape[0], N_LATENT)
    other = torch.where(observed, x, 1e3)  # wildly different missing values
    with torch.no_grad():
        torch.testing.assert_close(vae.log_px(x, z, observed), vae.log_px(other, z, observed))


def test_elbo_over_observed_values_in_pyros_path_and_the_direct_step():
    ppca = PPCA.random(N_DIMS, N_LATENT, sigma=0.5)
    vae = linear_gaussian_vae(ppca, missing=True)
    x, observed = _incomplete(ppca)
    x_nan = torch.where(observed, x, torch.nan)
    with torch.no_grad(), forked_rng("cpu") as rewind:
        loss = TraceMeanField_ELBO().differentiable_loss(vae.model, vae.guide, x_nan)
        rewind()
        qz = vae.qz(x_nan)
        z = qz.rsample()  # the draw the guide made
    mean = z @ ppca.weight.T + ppca.bias  # (n, D)
    log_px = Normal(mean, ppca.sigma).log_prob(x.reshape(-1, N_DIMS))
    recon = (log_px * observed.reshape(-1, N_DIMS)).sum()
    kl = kl_divergence(qz, vae.prior().expand(qz.batch_shape)).sum()
    torch.testing.assert_close(loss, -(recon - kl))
    step = TrainStep(vae, TraceMeanField_ELBO(), make_optimizer(vae.parameters(), 1e-3))
    assert step._direct_matches_pyro(x_nan, 1.0)  # the direct ELBO masks as Pyro's does


@pytest.mark.parametrize(
    ("network", "guide"),
    [
        ("mlp", "normal"),
        ("gated", "normal"),
        ("conv", "iaf"),
        ("resnet", "normal"),
        ("linear", "planar"),
    ],
)
def test_the_encoder_reads_the_values_and_the_mask(network, guide):
    options = {"flows": 1} if guide != "normal" else {}
    config = model_config(
        data_shape=(1, 8, 8), hidden=(8,), latent_dim=2, network=network, guide=guide, **options
    )
    complete, incomplete = VAE(config), VAE(model_config(config, missing=True))
    assert not isinstance(complete.encoder, ObservedInput)
    assert isinstance(incomplete.encoder, ObservedInput)
    x = torch.rand(3, 1, 8, 8)
    zero_missing = x.clone()
    zero_missing[:, :, :4] = 0.0
    nan_missing = x.clone()
    nan_missing[:, :, :4] = torch.nan
    with torch.no_grad():
        h_zero, h_nan = incomplete.encoder(zero_missing), incomplete.encoder(nan_missing)
        assert torch.isfinite(incomplete.qz(nan_missing).sample()).all()
    assert torch.isfinite(h_nan).all()
    assert not torch.allclose(h_zero, h_nan)  # a missing value is not an observed 0


def test_complete_data_take_no_mask():
    vae = VAE(model_config(data_shape=(1, 8, 8), hidden=(8,), latent_dim=2))
    x = torch.rand(2, 1, 8, 8)
    filled, mask = vae.observed(x)
    assert filled is x and mask is None
