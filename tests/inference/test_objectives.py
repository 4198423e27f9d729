"""Tests of :mod:`pyrovae.inference.objectives`: the importance-weighted bound, per data point.

Exact references: a direct computation from the same draws, and probabilistic
PCA, where log p(x) is closed form and the exact posterior makes every
importance weight equal to p(x).
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import RenyiELBO

from pyrovae.api import resume, train
from pyrovae.config import RunConfig, TrainConfig
from pyrovae.inference.objectives import ImportanceWeightedELBO, make_objective
from pyrovae.model.ppca import PPCA, linear_gaussian_vae
from pyrovae.model.spec import model_config
from pyrovae.model.vae import VAE
from pyrovae.sites import DATA_PLATE, LATENT


def small_vae() -> VAE:
    return VAE(model_config(data_shape=(1, 4, 4), hidden=(8,), latent_dim=3))


def ppca_setup(n: int = 500) -> tuple[PPCA, VAE, torch.Tensor]:
    ppca = PPCA.random(n_dims=6, n_latent=2)
    x = ppca.sample(n, torch.Generator().manual_seed(3))
    return ppca, linear_gaussian_vae(ppca), x.reshape(n, 1, 1, 6)


def posterior_guide(ppca: PPCA, diagonal: bool = False):
    """A guide drawing z from the exact p(z|x), or from its marginals (a diagonal q)."""

    def guide(x: torch.Tensor) -> None:
        posterior = ppca.posterior(x.flatten(1))
        if diagonal:
            scale = posterior.covariance_matrix.diagonal(dim1=-2, dim2=-1).sqrt()
            posterior = dist.Normal(posterior.loc, scale).to_event(1)
        else:
            posterior = dist.MultivariateNormal(posterior.loc, posterior.covariance_matrix)
        with pyro.plate(DATA_PLATE, x.shape[0], dim=-1):
            pyro.sample(LATENT, posterior)

    return guide


def test_make_objective_picks_the_importance_weighted_bound() -> None:
    objective = make_objective(TrainConfig(objective="iwae", particles=7))
    assert isinstance(objective, ImportanceWeightedELBO)
    assert objective.num_particles == 7 and objective.vectorize_particles


def test_bound_is_the_per_point_log_mean_exp_of_the_same_draws() -> None:
    vae = small_vae()
    x = torch.bernoulli(torch.rand(6, 1, 4, 4))
    k = 5
    torch.manual_seed(1)
    bound = ImportanceWeightedELBO(num_particles=k).bound(vae.model, vae.guide, x)
    torch.manual_seed(1)
    with torch.no_grad():
        qz = vae.qz(x)
        z = qz.rsample((k,))  # (k, batch, n_latent)
        log_w = vae.px(z).log_prob(x) + vae.prior().log_prob(z) - qz.log_prob(z)  # (k, batch)
    expected = torch.logsumexp(log_w, 0) - math.log(k)
    assert bound.shape == (6,)
    assert torch.allclose(bound, expected, atol=1e-4)
    loss = ImportanceWeightedELBO(num_particles=k).differentiable_loss(vae.model, vae.guide, x)
    loss.backward()
    assert vae.encoder.net[0].weight.grad.abs().sum() > 0


def test_bound_matches_pyro_renyi_alpha_zero() -> None:
    """An independent implementation: Pyro's RenyiELBO(alpha=0), on the same draws.

    It has no ``differentiable_loss`` (the trainer's entry point), hence the own class.
    """
    vae = small_vae()
    x = torch.bernoulli(torch.rand(8, 1, 4, 4))
    k = 4
    torch.manual_seed(2)
    ours = ImportanceWeightedELBO(num_particles=k).loss(vae.model, vae.guide, x)
    torch.manual_seed(2)
    renyi = RenyiELBO(alpha=0, num_particles=k, vectorize_particles=True, max_plate_nesting=1)
    assert ours == pytest.approx(renyi.loss(vae.model, vae.guide, x), rel=1e-6)
    assert not hasattr(renyi, "differentiable_loss")
    # Per point, not for the batch's joint density: the sum of per-point bounds
    # exceeds log-mean-exp of the summed weights (Jensen), here by a clear margin.
    torch.manual_seed(2)
    log_w = ImportanceWeightedELBO(num_particles=k).log_weights(vae.model, vae.guide, x)
    joint = (torch.logsumexp(log_w.sum(1), 0) - math.log(k)).item()
    assert -ours > joint + 0.1, (-ours, joint)


def test_exact_posterior_gives_exact_log_marginal_for_every_k() -> None:
    ppca, vae, x = ppca_setup(50)
    exact = ppca.log_marginal(x.flatten(1))
    for k in (1, 3):
        bound = ImportanceWeightedELBO(num_particles=k).bound(vae.model, posterior_guide(ppca), x)
        assert torch.allclose(bound, exact, atol=1e-3)


def test_bound_rises_with_k_toward_exact_log_marginal() -> None:
    ppca, vae, x = ppca_setup(500)
    guide = posterior_guide(ppca, diagonal=True)  # right means, no correlation
    exact = ppca.log_marginal(x.flatten(1)).mean().item()
    with torch.no_grad():
        bounds = [
            ImportanceWeightedELBO(num_particles=k).bound(vae.model, guide, x).mean().item()
            for k in (1, 10, 100, 1000)
        ]
    gaps = [exact - b for b in bounds]
    assert gaps[0] > 0.3  # a diagonal q is far from this correlated posterior
    assert all(a > b for a, b in zip(gaps, gaps[1:], strict=False)), gaps
    assert 0 < gaps[-1] < 0.02, gaps


def test_global_sites_are_refused() -> None:
    def model(x: torch.Tensor) -> None:
        pyro.sample("w", dist.Normal(0.0, 1.0))
        with pyro.plate(DATA_PLATE, x.shape[0], dim=-1):
            pyro.sample("x", dist.Normal(0.0, 1.0), obs=x)

    def guide(x: torch.Tensor) -> None:
        pyro.sample("w", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="data plate"):
        ImportanceWeightedELBO(num_particles=2).loss(model, guide, torch.zeros(3))


def test_old_config_without_the_new_options_loads_with_defaults() -> None:
    config = RunConfig.from_dict({"model": {"latent_dim": 4}, "train": {"elbo": "trace"}})
    assert config.train.objective == "elbo"
    assert config.model.options == {} and config.model.guide == "normal"
    assert config.validate() is config
    assert RunConfig.from_dict(RunConfig().to_dict()) == RunConfig()


def test_iwae_training_runs_and_resumes(tiny_config, tmp_path) -> None:
    tiny_config.train.objective = "iwae"
    tiny_config.train.particles = 3
    tiny_config.train.epochs = 1
    quiet = {"progress": False, "log": lambda _: None}
    first = train(tiny_config, tmp_path / "run", **quiet)
    assert math.isfinite(first.final["train_elbo"])
    resumed = resume(tmp_path / "run", epochs=2, **quiet)
    assert resumed.config.train.objective == "iwae"
    assert [row["epoch"] for row in resumed.history] == [1, 2]


def test_average_elbo_terms_matches_the_closed_form_ppca_elbo():
    # With a diagonal Gaussian guide the ELBO is log p(x) - KL(q || posterior), closed form;
    # the averaged estimate lands within 3 of its reported Monte Carlo standard errors
    # (the KL to the N(0, I) prior is analytic: no error). This untrained guide is far
    # from the posterior, so its ELBO is noisy and the draws stop at their cap.
    from torch.distributions import MultivariateNormal, kl_divergence

    from pyrovae.inference.objectives import average_elbo_terms

    ppca, vae, x = ppca_setup(n=100)
    estimate = average_elbo_terms(vae.model, vae.guide, x)
    qz = vae.qz(x)
    posterior = ppca.posterior(x.flatten(1))
    q_full = MultivariateNormal(qz.mean.double(), torch.diag_embed(qz.variance.double()))
    p_full = MultivariateNormal(posterior.loc.double(), posterior.covariance_matrix.double())
    exact = ppca.log_marginal(x.flatten(1)).double() - kl_divergence(q_full, p_full)
    stderr = estimate.mc_stderr()
    assert stderr > 0 and estimate.draws == 100
    assert estimate.mc_stderr("kl") == 0.0
    assert abs(float(estimate.elbo.mean() - exact.mean())) < 3 * stderr


def test_average_elbo_terms_respects_its_caps():
    from pyrovae.inference.objectives import average_elbo_terms

    _, vae, x = ppca_setup(n=100)
    capped = average_elbo_terms(vae.model, vae.guide, x, target_stderr=1e-9, max_draws=7)
    assert capped.draws == 7 and capped.mc_stderr() > 1e-9  # says what it reached
    budget = average_elbo_terms(vae.model, vae.guide, x, target_stderr=1e-9, max_image_draws=500)
    assert budget.draws == 5
