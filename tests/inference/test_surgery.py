"""Tests of pyrovae/inference/surgery.py beyond the figures (tests/reports/test_evaluate.py)."""

from __future__ import annotations

import math

import pytest
import torch

from pyrovae.inference.surgery import elbo_surgery
from pyrovae.model.priors.base import PRIORS
from pyrovae.model.spec import model_config
from pyrovae.model.vae import VAE


def test_surgery_runs_the_networks_in_eval_mode_and_leaves_the_mode_as_it_was(make_vae):
    # Sizing the surgery ran the encoder in training mode: a user's BatchNorm updated
    # its running statistics, so the model scored afterwards was not the one given.
    vae = make_vae()
    vae.train()
    modes = []
    vae.encoder.register_forward_pre_hook(lambda module, args: modes.append(module.training))
    elbo_surgery(vae, torch.rand(8, 1, 4, 4).bernoulli(), draws=16)
    assert modes and not any(modes)
    assert vae.training


@pytest.mark.parametrize("prior", PRIORS.names())
def test_surgery_scores_the_models_own_prior_as_brute_force_does(prior):
    # Every prior (a mixture, a flow, a VampPrior's, a hierarchy's marginal), against
    # the decomposition computed by brute force: q(z) as the mixture of the 30 images'
    # q(z|x), 4000 draws from each. A surgery scored against N(0, I) passed before.
    torch.manual_seed(0)
    x = torch.full((30, 1, 4, 4), 0.3).bernoulli()
    torch.manual_seed(1)
    vae = VAE(model_config(data_shape=(1, 4, 4), hidden=(16,), latent_dim=2, prior=prior)).eval()
    with torch.no_grad():
        qz = vae.qz(x)
        z = qz.sample((4000,))  # (draws, M, L)
        log_q_pairs = qz.log_prob(z[:, :, None, :].expand(-1, -1, 30, -1)).double()
        log_q_own = log_q_pairs.diagonal(dim1=1, dim2=2)  # log q(z|x) of its own image
        log_q_marginal = torch.logsumexp(log_q_pairs, -1) - math.log(30)
        log_p = vae.prior().log_prob(z).double()
    torch.manual_seed(2)
    s = elbo_surgery(vae, x, draws=600)
    checks = [
        (s.average_kl, s.average_kl_mc_stderr, float((log_q_own - log_p).mean())),
        (s.marginal_kl, s.marginal_kl_mc_stderr, float((log_q_marginal - log_p).mean())),
    ]
    for value, stderr, exact in checks:
        assert abs(value - exact) < 4 * stderr + 0.01, (value, stderr, exact)
