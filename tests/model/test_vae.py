from __future__ import annotations

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from pyrovae.config import ModelConfig
from pyrovae.errors import ConfigError
from pyrovae.inference.objectives import elbo_terms, make_elbo
from pyrovae.model.ppca import PPCA, linear_gaussian_vae
from pyrovae.model.spec import model_config
from pyrovae.model.vae import VAE
from pyrovae.sites import DATA_PLATE, LATENT, OBS


def _vae(**options) -> VAE:
    return VAE(model_config(data_shape=(1, 8, 8), hidden=(16,), latent_dim=3, **options))


def _binary_batch(n: int = 6) -> torch.Tensor:
    return torch.bernoulli(torch.full((n, 1, 8, 8), 0.4))


def test_sites_live_in_the_data_plate():
    vae, x = _vae(), _binary_batch()
    guide_trace = poutine.trace(vae.guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(vae.model, trace=guide_trace)).get_trace(x)
    for trace in (guide_trace, model_trace):
        frames = [frame.name for frame in trace.nodes[LATENT]["cond_indep_stack"]]
        assert frames == [DATA_PLATE]
    assert model_trace.nodes[OBS]["is_observed"]
    assert model_trace.nodes[LATENT]["value"].shape == (6, 3)
    # The networks are registered with Pyro's param store.
    assert any(
        name.startswith("vae$$$amortized_guide.encoder") for name in pyro.get_param_store().keys()
    )


def test_needs_a_data_shape():
    with pytest.raises(ConfigError, match="data_shape"):
        VAE(ModelConfig())


def test_meanfield_loss_is_minus_recon_plus_analytic_kl():
    vae, x = _vae(), _binary_batch()
    pyro.set_rng_seed(1)
    loss = TraceMeanField_ELBO().differentiable_loss(vae.model, vae.guide, x)
    pyro.set_rng_seed(1)
    terms = elbo_terms(vae.model, vae.guide, x)
    torch.testing.assert_close(loss, -terms.elbo.sum())


@pytest.mark.parametrize("elbo", [TraceMeanField_ELBO, Trace_ELBO])
def test_beta_is_an_argument_that_scales_only_the_kl_term(elbo):
    """Pyro's ELBOs pass ``beta`` on to the model and guide; the VAE keeps no β of its own."""
    vae, x = _vae(), _binary_batch()
    pyro.set_rng_seed(2)
    terms = elbo_terms(vae.model, vae.guide, x)
    pyro.set_rng_seed(2)
    loss = elbo().differentiable_loss(vae.model, vae.guide, x, beta=0.25)
    if elbo is TraceMeanField_ELBO:  # analytic KL; Trace_ELBO samples it from the same z
        torch.testing.assert_close(loss, -(terms.recon - 0.25 * terms.kl).sum())
    else:
        pyro.set_rng_seed(2)
        z = vae.qz(x).rsample()
        sampled_kl = vae.qz(x).log_prob(z) - vae.prior().log_prob(z)
        torch.testing.assert_close(loss, -(terms.recon - 0.25 * sampled_kl).sum())
    pyro.set_rng_seed(2)
    plain = elbo().differentiable_loss(vae.model, vae.guide, x)
    pyro.set_rng_seed(2)
    assert torch.equal(plain, elbo().differentiable_loss(vae.model, vae.guide, x, beta=1.0))
    assert not hasattr(vae, "beta")


@pytest.mark.parametrize("elbo", ["meanfield", "trace"])
def test_vectorized_particles(elbo):
    vae, x = _vae(network="mlp"), _binary_batch()
    loss = make_elbo(elbo, particles=4).differentiable_loss(vae.model, vae.guide, x)
    assert loss.shape == () and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in vae.parameters() if p.requires_grad)


def test_trace_and_meanfield_agree_in_expectation():
    vae, x = _vae(), _binary_batch(4)
    with torch.no_grad():
        exact = TraceMeanField_ELBO(num_particles=2000, vectorize_particles=True).loss(
            vae.model, vae.guide, x
        )
        sampled = Trace_ELBO(num_particles=2000, vectorize_particles=True).loss(
            vae.model, vae.guide, x
        )
    assert abs(exact - sampled) < 0.02 * abs(exact)


def test_elbo_is_a_lower_bound_on_exact_ppca_log_likelihood():
    ppca = PPCA.random(n_dims=6, n_latent=2)
    vae = linear_gaussian_vae(ppca)
    x = ppca.sample(50).reshape(50, 1, 1, 6)
    with torch.no_grad():
        elbo = torch.stack([elbo_terms(vae.model, vae.guide, x).elbo for _ in range(200)]).mean(0)
    assert torch.all(elbo < ppca.log_marginal(x.reshape(50, 6)))


def test_sample_and_reconstruct_shapes():
    vae, x = _vae(), _binary_batch(5)
    assert vae.sample(7).shape == (7, 1, 8, 8)
    binary = vae.sample(7, mean=False)
    assert set(binary.unique().tolist()) <= {0.0, 1.0}
    recon = vae.reconstruct(x)
    assert recon.shape == x.shape and recon.min() >= 0 and recon.max() <= 1


def test_the_vae_guide_is_the_reusable_amortized_guide():
    """One guide implementation: VAE.guide samples through its AmortizedGuide."""
    from pyrovae.model.guides.amortized import AmortizedGuide

    vae, x = _vae(guide="iaf", flows=2), _binary_batch()
    assert isinstance(vae.amortized_guide, AmortizedGuide)
    assert vae.amortized_guide.event_shape == (3,)
    assert vae.guide_net is vae.amortized_guide.head
    pyro.set_rng_seed(4)
    z = vae.guide(x)
    pyro.set_rng_seed(4)
    assert torch.equal(z, vae.amortized_guide(x))
    # The encoder is stored once, inside the guide.
    keys = set(vae.state_dict())
    assert not any(key.startswith("encoder.") for key in keys)
    assert set(dict(vae.named_parameters())) <= keys


def test_predictive_draws_prior_and_posterior_predictive_data():
    from pyro.infer import Predictive

    vae, x = _vae(), _binary_batch(5)
    prior = Predictive(vae.model, num_samples=7)(None, batch_size=4)
    assert prior["z"].shape == (7, 4, 3) and prior["x"].shape == (7, 4, 1, 8, 8)
    posterior = Predictive(vae.model, guide=vae.guide, num_samples=7)(x, observe=False)
    assert posterior["z"].shape == (7, 5, 3) and posterior["x"].shape == (7, 5, 1, 8, 8)
    assert not all(torch.equal(draw, x) for draw in posterior["x"])  # draws, not the data
    with pytest.raises(ConfigError, match="needs images x"):
        Predictive(vae.model, guide=vae.guide, num_samples=2)(None, batch_size=4)
    with pytest.raises(ConfigError, match="batch_size=3 but x holds 5"):
        vae.model(x, batch_size=3)
