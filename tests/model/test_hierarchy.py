"""Tests of :mod:`pyrovae.model.hierarchy`, the two-level prior and the ladder guide:
exact densities against the two Normal levels written out by hand and against an
autograd change of variables, the --top-dim checks, the ELBO gap on probabilistic
PCA's closed-form posterior, and a two-level VAE through the command line (train,
resume, sample, evaluate)."""

from __future__ import annotations

import json
import warnings

import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F

from pyrovae.api import load_run
from pyrovae.errors import ConfigError
from pyrovae.inference.objectives import make_elbo
from pyrovae.model.guides.ladder import LadderGuide
from pyrovae.model.ppca import PPCA, linear_gaussian_vae
from pyrovae.model.priors.hierarchical import HierarchicalPrior
from pyrovae.model.spec import completed, model_config, resolve
from pyrovae.model.vae import VAE


def two_level_vae(latent_dim: int = 5, top_dim: int = 2, prior: str = "hierarchical") -> VAE:
    """A VAE with the ladder guide on 4x4 images, moved away from its initialization."""
    config = model_config(
        data_shape=(1, 4, 4),
        hidden=(8,),
        latent_dim=latent_dim,
        guide="ladder",
        prior=prior,
        top_dim=top_dim,
        ladder_hidden=(6, 7),
        **({"prior_hidden": (6,)} if prior == "hierarchical" else {}),
    )
    vae = VAE(config)
    with torch.no_grad():
        for p in vae.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return vae


def test_ladder_log_q_is_the_two_normal_levels() -> None:
    vae = two_level_vae()
    head = vae.guide_net
    assert isinstance(head, LadderGuide) and head.n_top == 2
    x = torch.rand(3, 1, 4, 4)
    z = 2 * torch.randn(3, 5)  # any codes, not drawn by q
    with torch.no_grad():
        h = vae.encoder(x)  # (3, F)
        z1, z2 = z[:, :3], z[:, 3:]
        loc2 = head.top_loc(h)
        scale2 = F.softplus(head.top_raw_scale(h)) + head.min_scale
        hidden = head.net(torch.relu(head.from_h(h) + head.from_top(z2)))
        loc1 = head.loc(hidden)
        scale1 = F.softplus(head.raw_scale(hidden)) + head.min_scale
        expected = dist.Normal(loc2, scale2).log_prob(z2).sum(-1) + dist.Normal(
            loc1, scale1
        ).log_prob(z1).sum(-1)
        assert torch.allclose(vae.qz(x).log_prob(z), expected, atol=1e-5)


def test_hierarchical_prior_is_the_two_normal_levels() -> None:
    vae = two_level_vae()
    prior = vae.prior
    assert isinstance(prior, HierarchicalPrior)
    z = 2 * torch.randn(4, 5)
    with torch.no_grad():
        loc1, scale1 = prior.conditional(z[:, 3:])
        expected = dist.Normal(0.0, 1.0).log_prob(z[:, 3:]).sum(-1) + dist.Normal(
            loc1, scale1
        ).log_prob(z[:, :3]).sum(-1)
        assert torch.allclose(prior().log_prob(z), expected, atol=1e-5)


def test_hierarchical_prior_starts_as_the_standard_normal() -> None:
    config = model_config(data_shape=(1, 4, 4), hidden=(8,), latent_dim=4, prior="hierarchical")
    z = torch.randn(6, 4)
    with torch.no_grad():
        expected = dist.Normal(0.0, 1.0).log_prob(z).sum(-1)
        assert torch.allclose(VAE(config).prior().log_prob(z), expected, atol=1e-4)


@pytest.mark.parametrize("which", ["guide", "prior"])
def test_log_density_matches_change_of_variables(which: str) -> None:
    vae = two_level_vae()
    d = vae.qz(torch.rand(1, 1, 4, 4)) if which == "guide" else vae.prior().expand((1,))
    transform = d.transforms[0]
    eps = d.base_dist.sample()  # (1, 5)
    z = transform(eps)
    log_q = d.log_prob(z)

    def forward(v: torch.Tensor) -> torch.Tensor:
        return transform(v.unsqueeze(0)).squeeze(0)

    jacobian = torch.autograd.functional.jacobian(forward, eps[0])  # (5, 5)
    expected = d.base_dist.log_prob(eps) - torch.linalg.slogdet(jacobian).logabsdet
    assert torch.allclose(log_q, expected, atol=1e-5), (log_q, expected)
    # z2 (the last two coordinates) does not depend on eps1: the Jacobian is block-triangular.
    assert torch.equal(jacobian[3:, :3], torch.zeros(2, 3))
    # Scored again without the cache (a fresh tensor), through the closed-form inverse.
    assert torch.allclose(d.log_prob(z.clone()), log_q, atol=1e-5)
    assert torch.allclose(transform.inv(z.clone()), eps, atol=1e-5)


def test_ladder_scores_codes_against_every_image() -> None:
    """log q(z_s|x_m) for every pair, as ELBO surgery and the VampPrior ask: one call
    with codes (S, 1, n) equals S calls."""
    vae = two_level_vae()
    x, z = torch.rand(4, 1, 4, 4), torch.randn(3, 5)
    with torch.no_grad():
        qz = vae.qz(x)
        pairs = qz.log_prob(z.unsqueeze(1))  # (3, 4)
        one_by_one = torch.stack([qz.log_prob(zs.expand(4, 5)) for zs in z])
    assert pairs.shape == (3, 4)
    assert torch.allclose(pairs, one_by_one, atol=1e-5)


def test_ladder_draws_particles_and_tempers() -> None:
    vae = two_level_vae()
    qz = vae.qz(torch.rand(2, 1, 4, 4))
    z = qz.rsample((50,))
    assert z.shape == (50, 2, 5) and z.requires_grad
    cooler = LadderGuide.temper(qz, 0.3).sample((4000,))
    assert (cooler.var(0) < qz.sample((4000,)).var(0)).all()


def test_ladder_guide_under_the_standard_normal_prior_and_the_vampprior() -> None:
    for prior in ("normal", "vamp"):
        vae = two_level_vae(prior=prior)
        x = torch.bernoulli(torch.rand(3, 1, 4, 4))
        z = vae.qz(x).rsample()
        assert vae.log_joint(x, z).shape == (3,)
        assert torch.isfinite(vae.log_joint(x, z)).all()


@pytest.mark.parametrize("component", [{"guide": "ladder"}, {"prior": "hierarchical"}])
def test_top_dim_must_leave_both_levels_a_unit(component: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="--top-dim must be less than --latent-dim"):
        resolve(model_config(latent_dim=4, top_dim=4, **component))
    with pytest.raises(ConfigError, match="--top-dim"):
        resolve(model_config(latent_dim=1, **component))
    with pytest.raises(ConfigError, match="--top-dim"):
        resolve(model_config(latent_dim=4, top_dim=0, **component))


def test_top_dim_defaults_to_half_the_latent_vector() -> None:
    config = model_config(data_shape=(1, 4, 4), hidden=(8,), latent_dim=7, guide="ladder")
    assert VAE(config).guide_net.n_top == 3
    # Saved as given (none): a run is rebuilt by the same rule.
    assert completed(config).options["guide"]["top_dim"] is None


def test_other_components_take_no_top_dim() -> None:
    """Runs of the other components save the same options as before."""
    assert completed(model_config()).options["guide"] == {}
    assert completed(model_config()).options["prior"] == {}
    with pytest.raises(ConfigError, match="top-dim is not an option"):
        model_config(top_dim=2)


def ladder_gap(ppca: PPCA, steps: int) -> tuple[float, float]:
    """(ELBO gap of the ladder guide fitted with the decoder fixed, best mean-field gap),
    nats per point on held-out data; the mean-field bound is in closed form."""
    train_x = ppca.sample(2048, torch.Generator().manual_seed(1)).reshape(-1, 1, 1, ppca.n_dims)
    test_x = ppca.sample(500, torch.Generator().manual_seed(2)).reshape(-1, 1, 1, ppca.n_dims)
    vae = linear_gaussian_vae(ppca, guide="ladder", top_dim=1, ladder_hidden=(16,))
    vae.decoder.requires_grad_(False)
    optimizer = torch.optim.Adam([p for p in vae.parameters() if p.requires_grad], lr=1e-2)
    elbo = make_elbo("trace", particles=8)
    with warnings.catch_warnings():
        # pyro.module warns that the frozen decoder stays out of the param store: intended.
        warnings.filterwarnings("ignore", "decoder.net", UserWarning)
        for _ in range(steps):
            x = train_x[torch.randint(0, train_x.shape[0], (256,))]
            loss = elbo.differentiable_loss(vae.model, vae.guide, x) / x.shape[0]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            elbo_test = -make_elbo("trace", particles=64).loss(vae.model, vae.guide, test_x) / 500
    gap = ppca.log_marginal(test_x.flatten(1)).mean().item() - elbo_test
    precision = torch.linalg.inv(ppca.posterior(torch.zeros(1, ppca.n_dims)).covariance_matrix[0])
    bound = 0.5 * (precision.diag().log().sum() - torch.logdet(precision)).item()
    return gap, bound


def test_ladder_guide_fits_a_correlated_posterior_mean_field_cannot() -> None:
    """On probabilistic PCA the exact posterior is a correlated Gaussian: z1 given z2
    is linear-Gaussian, which the ladder guide (top_dim 1) can represent."""
    gap, bound = ladder_gap(PPCA.random(n_dims=6, n_latent=2), steps=200)
    assert bound > 0.4
    assert gap < bound - 0.25, (gap, bound)


@pytest.mark.slow
def test_ladder_guide_closes_the_ppca_gap() -> None:
    gap, _ = ladder_gap(PPCA.random(n_dims=6, n_latent=2), steps=2000)
    assert 0 <= gap < 0.05, gap


TWO_LEVEL = ["--guide", "ladder", "--prior", "hierarchical", "--top-dim", "2"]
SMALL = ["--hidden", "16", "--latent-dim", "4", "--batch-size", "512", "--no-progress"]


def test_two_level_vae_through_the_command_line(tmp_path) -> None:
    from click.testing import CliRunner

    from pyrovae.cli import main

    out, runner = tmp_path / "run", CliRunner()
    result = runner.invoke(main, ["train", "--epochs", "1", "--out", str(out), *TWO_LEVEL, *SMALL])
    assert result.exit_code == 0, result.output
    run = load_run(out, device="cpu")
    assert (run.config.model.guide, run.config.model.prior) == ("ladder", "hierarchical")
    assert run.config.model.options["prior"]["top_dim"] == 2
    array = tmp_path / "samples.npy"
    sample = ["sample", "--run", str(out), "-n", "4", "--temperature", "0.7"]
    result = runner.invoke(main, [*sample, "--save-array", str(array)])
    assert result.exit_code == 0, result.output
    report = tmp_path / "evaluate.json"
    evaluate = ["evaluate", "--run", str(out), "-k", "20", "-n", "40", "--no-progress"]
    result = runner.invoke(main, [*evaluate, "--metrics", "logpx,elbo", "--json", str(report)])
    assert result.exit_code == 0, result.output
    text = report.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text)


@pytest.mark.slow
def test_two_level_vae_resumes_evaluates_and_diagnoses(tmp_path) -> None:
    """Resume from the command line, evaluate's default metrics (ELBO surgery scores
    every code against every image), and diagnose (PSIS and NUTS on z's density)."""
    from click.testing import CliRunner

    from pyrovae.cli import main

    out, runner = tmp_path / "run", CliRunner()
    result = runner.invoke(main, ["train", "--epochs", "1", "--out", str(out), *TWO_LEVEL, *SMALL])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["train", "--resume", str(out), "--epochs", "2", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert [row["epoch"] for row in load_run(out, device="cpu").history] == [1, 2]
    evaluate = ["evaluate", "--run", str(out), "-k", "20", "-n", "40", "--no-progress"]
    result = runner.invoke(main, evaluate)
    assert result.exit_code == 0, result.output
    assert "I(x; z)" in result.output
    diagnose = ["diagnose", "--run", str(out), "-n", "5", "--draws", "100", "--nuts", "1"]
    result = runner.invoke(
        main, [*diagnose, "--nuts-draws", "10", "--chains", "2", "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    assert (out / "diagnostics" / "diagnostics.json").exists()
