"""Tests of pyrovae/local_guides.py: per-data-point q* against PPCA's exact posterior."""

from __future__ import annotations

import math

import pytest
import torch

from pyrovae.errors import ConfigError
from pyrovae.evaluation import importance_batch
from pyrovae.local_guides import fit_local_posterior
from pyrovae.ppca import PPCA, linear_gaussian_vae
from pyrovae.priors import PRIORS


@pytest.fixture
def ppca_problem():
    ppca = PPCA.random(12, 2, sigma=0.5, seed=0)
    vae = linear_gaussian_vae(ppca)
    x = ppca.sample(3, torch.Generator().manual_seed(1))  # (3, 12)
    return ppca, vae, x.reshape(3, 1, 1, 12), ppca.posterior(x)


def test_normal_local_posterior_is_the_mean_field_optimum(ppca_problem):
    # For a Gaussian posterior N(m, S) the best diagonal Gaussian (in KL(q || p)) has
    # mean m and variances 1 / (S^-1)_ii. Tolerances: 0.15 posterior sds on the means,
    # 10% on the sds (stochastic optimization with 8 particles).
    ppca, vae, x, posterior = ppca_problem
    local = fit_local_posterior(vae, x, "normal", steps=1000)
    q = local.posterior
    assert q.batch_shape == (3,) and q.event_shape == (2,)
    cov = posterior.covariance_matrix[0]
    optimal_sd = torch.linalg.inv(cov).diagonal().rsqrt()  # (2,)
    assert ((q.mean - posterior.loc).abs() / cov.diagonal().sqrt()).max() < 0.15
    torch.testing.assert_close(q.stddev, optimal_sd.expand(3, -1), rtol=0.1, atol=0)
    assert local.losses[-1] < local.losses[0]


def test_iaf_local_posterior_captures_correlation(ppca_problem):
    # The posterior correlation is about -0.9, so a mean-field q* stays 0.83 nats
    # below log p(x); one IAF per point must close most of that gap.
    ppca, vae, x, _ = ppca_problem
    x1 = x[:1]
    local = fit_local_posterior(vae, x1, "iaf", steps=300)
    assert local.posterior.batch_shape == (1,)
    z = local.posterior.sample((5,))
    assert z.shape == (5, 1, 2) and local.posterior.log_prob(z).shape == (5, 1)
    _, elbo = importance_batch(vae, x1, 4000, 1000, local.posterior)
    exact = ppca.log_marginal(x1.flatten(1)).double()
    assert float(exact - elbo) < 0.2


def test_fit_leaves_the_vae_unchanged(ppca_problem):
    _, vae, x, _ = ppca_problem
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    flags = [p.requires_grad for p in vae.parameters()]
    fit_local_posterior(vae, x, "normal", steps=5)
    for key, value in vae.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert [p.requires_grad for p in vae.parameters()] == flags


def test_bad_kind_and_steps_are_config_errors(ppca_problem):
    _, vae, x, _ = ppca_problem
    with pytest.raises(ConfigError, match="kind"):
        fit_local_posterior(vae, x, "gamma")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="steps"):
        fit_local_posterior(vae, x, "normal", steps=0)


@pytest.mark.parametrize("prior", PRIORS.names())
@pytest.mark.parametrize("kind", ["normal", "iaf"])
def test_local_posterior_for_every_prior(make_vae, prior, kind):
    # Mixture priors (mog, vamp) have a support autoguides cannot map onto R^n.
    vae = make_vae(prior=prior)
    x = torch.bernoulli(torch.full((2, 1, 4, 4), 0.3))
    local = fit_local_posterior(vae, x, kind, steps=2, particles=2)
    assert local.posterior.sample((3,)).shape == (3, 2, vae.n_latent)
    assert all(math.isfinite(loss) for loss in local.losses)


@pytest.mark.gpu
def test_iaf_local_posterior_on_cuda(make_vae):
    vae = make_vae().cuda()
    x = torch.bernoulli(torch.full((2, 1, 4, 4), 0.3)).cuda()
    local = fit_local_posterior(vae, x, "iaf", steps=2, particles=2, num_transforms=2)
    z = local.posterior.sample((3,))
    assert z.device.type == "cuda" and local.posterior.log_prob(z).shape == (3, 2)
