"""Tests of pyrovae/evaluation.py and the ``pyrovae evaluate`` command, against the exact
log p(x) of probabilistic PCA where one exists."""

from __future__ import annotations

import json
import math

import pytest
import torch
from click.testing import CliRunner
from pyro.distributions import MultivariateNormal
from torch.distributions import kl_divergence

from pyrovae.config import ModelConfig
from pyrovae.evaluation import (
    ACTIVE_UNIT_THRESHOLD,
    EvaluationResult,
    elbo_surgery,
    evaluate,
    importance_batch,
    importance_log_marginal,
    inference_gaps,
)
from pyrovae.guides import GUIDES
from pyrovae.model import VAE
from pyrovae.ppca import PPCA, linear_gaussian_vae
from pyrovae.priors import PRIORS


def ppca_with_marginal_guide(n_dims: int = 12, n_latent: int = 2, n: int = 16):
    """A PPCA VAE whose amortized guide is N(exact posterior mean, exact marginal sds).

    The linear encoder computes the posterior mean M^-1 W^T (x - b) exactly; the
    diagonal scales are the posterior's marginal standard deviations, which are
    wider than its conditional ones, so q covers p(z|x) and is a sound proposal.
    """
    ppca = PPCA.random(n_dims, n_latent, sigma=0.5, seed=0)
    vae = linear_gaussian_vae(ppca)
    x = ppca.sample(n, torch.Generator().manual_seed(1))  # (n, n_dims)
    posterior = ppca.posterior(x)
    m = ppca.weight.T @ ppca.weight + ppca.sigma**2 * torch.eye(n_latent)
    a = torch.linalg.solve(m, ppca.weight.T)  # (n_latent, n_dims)
    marginal_sd = posterior.covariance_matrix[0].diagonal().sqrt()
    head = vae.guide_net
    with torch.no_grad():
        vae.encoder.net.weight.zero_()
        vae.encoder.net.bias.zero_()
        vae.encoder.net.weight[:n_latent] = a
        vae.encoder.net.bias[:n_latent] = -a @ ppca.bias
        head.loc.weight.zero_()
        head.loc.bias.zero_()
        head.loc.weight[:, :n_latent] = torch.eye(n_latent)
        head.raw_scale.weight.zero_()
        # softplus^-1(sd - floor), so that the guide's scale is exactly sd.
        head.raw_scale.bias.copy_(torch.log(torch.expm1(marginal_sd - head.min_scale)))
    return ppca, vae, x.reshape(n, 1, 1, n_dims), posterior


def test_marginal_guide_helper_is_exact():
    ppca, vae, x, posterior = ppca_with_marginal_guide()
    qz = vae.qz(x)
    torch.testing.assert_close(qz.mean, posterior.loc, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(
        qz.stddev[0], posterior.covariance_matrix[0].diagonal().sqrt(), atol=1e-5, rtol=1e-5
    )


def test_importance_log_marginal_matches_exact_ppca():
    # Tolerance, K = 5000: 0.1 nats on every point and 0.02 on the mean over 16 points.
    # Measured spread of the estimator here: 0.02 nats per point (bias < 0.001), so
    # these are about 5 and 4 standard deviations.
    ppca, vae, x, _ = ppca_with_marginal_guide()
    exact = ppca.log_marginal(x.flatten(1)).double()
    estimate = importance_log_marginal(vae, x, k=5000, chunk_size=300, batch_size=5)
    assert estimate.shape == (x.shape[0],)
    assert abs(float((estimate - exact).mean())) < 0.02
    assert float((estimate - exact).abs().max()) < 0.1


def test_importance_log_marginal_beats_the_elbo():
    ppca, vae, x, _ = ppca_with_marginal_guide()
    log_px, elbo = importance_batch(vae, x.flatten(0, 0), k=1000, chunk_size=128)
    exact = ppca.log_marginal(x.flatten(1)).double()
    # The ELBO is a lower bound with a clear gap here (q is mean-field), IS closes most of it.
    assert bool((elbo < log_px).all())
    assert float((exact - log_px).mean()) < 0.1 * float((exact - elbo).mean())


@pytest.mark.parametrize("chunk_size", [1, 7, 64])
def test_running_logsumexp_is_exact_for_any_chunk(chunk_size):
    # With the exact posterior as proposal every ratio equals p(x), so the chunked
    # log-sum-exp must return log p(x) whatever the chunking.
    ppca, vae, x, posterior = ppca_with_marginal_guide(n=4)
    log_px, elbo = importance_batch(vae, x, 64, chunk_size, posterior)
    exact = ppca.log_marginal(x.flatten(1)).double()
    torch.testing.assert_close(log_px, exact, atol=1e-4, rtol=0)
    torch.testing.assert_close(elbo, exact, atol=1e-4, rtol=0)


def test_importance_log_marginal_rejects_bad_k():
    from pyrovae.errors import ConfigError

    _, vae, x, _ = ppca_with_marginal_guide(n=2)
    with pytest.raises(ConfigError, match="-k"):
        importance_log_marginal(vae, x, k=0)


def test_importance_log_marginal_accepts_uint8_images():
    vae = VAE(ModelConfig(image_shape=(1, 4, 4), hidden=(8,), latent_dim=2))
    images = (torch.rand(6, 1, 4, 4) > 0.5).to(torch.uint8) * 255
    torch.manual_seed(3)
    from_uint8 = importance_log_marginal(vae, images, k=10)
    torch.manual_seed(3)
    from_float = importance_log_marginal(vae, images.float() / 255, k=10)
    torch.testing.assert_close(from_uint8, from_float)


def _binary_images(n: int = 12) -> torch.Tensor:
    return torch.bernoulli(torch.full((n, 1, 4, 4), 0.3))


def _check_result(result: EvaluationResult, vae: VAE) -> None:
    assert math.isfinite(result.log_px) and math.isfinite(result.elbo)
    assert result.log_px_stderr > 0
    assert result.elbo == pytest.approx(result.recon - result.kl)
    assert result.bits_per_dim == pytest.approx(-result.log_px / (16 * math.log(2)))
    assert 0 <= result.active_units <= vae.n_latent == len(result.unit_variances)
    json.dumps(result.to_dict())  # every figure is JSON-serializable
    assert "log p(x)" in result.format_table()


@pytest.mark.parametrize("guide", GUIDES.names())
def test_evaluate_every_guide(make_vae, guide):
    vae = make_vae(guide=guide)
    result = evaluate(vae, _binary_images(), k=16, gaps=1, gap_steps=3, surgery_samples=20)
    _check_result(result, vae)
    assert result.gaps is not None and result.gaps.n == 1
    if getattr(vae.guide_net, "scores_any_z", True):
        assert result.surgery is not None
    else:
        assert result.surgery is None and any("surgery" in w for w in result.warnings)


@pytest.mark.parametrize("prior", PRIORS.names())
def test_evaluate_every_prior(make_vae, prior):
    vae = make_vae(prior=prior)
    result = evaluate(vae, _binary_images(), k=16, surgery_samples=20)
    _check_result(result, vae)
    assert result.surgery is not None
    s = result.surgery
    assert s.average_kl == pytest.approx(s.marginal_kl + s.mutual_information)


def test_active_units_and_collapse_warning(make_vae):
    vae = make_vae(latent_dim=4)
    with torch.no_grad():
        # Units 1..3 ignore x: their E_q[z_u|x] is the same for every image.
        vae.guide_net.loc.weight[1:] = 0.0
        vae.guide_net.loc.weight[0] *= 50.0
    result = evaluate(vae, _binary_images(40), k=4, surgery_samples=20)
    assert result.unit_variances[0] > ACTIVE_UNIT_THRESHOLD
    assert result.unit_variances[1:] == pytest.approx([0.0] * 3, abs=1e-12)
    assert result.active_units == 1
    assert any("posterior collapse" in w for w in result.warnings)


@pytest.mark.parametrize("guide", GUIDES.names())
def test_no_active_units_when_q_ignores_x(make_vae, guide):
    # Constant encoder features: q(z|x) is the same N(0, 1)-wide distribution for every
    # image, so Cov_x(E_q[z_u|x]) = 0 for every unit, also where E_q is a sample mean.
    vae = make_vae(guide=guide)
    with torch.no_grad():
        for p in vae.encoder.parameters():
            p.zero_()
        vae.guide_net.raw_scale.bias.fill_(math.log(math.expm1(1.0)))
    result = evaluate(vae, _binary_images(40), k=2, surgery_samples=10)
    assert result.active_units == 0, result.unit_variances


def test_elbo_surgery_of_a_collapsed_guide_is_zero(make_vae):
    # q(z|x) = N(0, I) = p(z) for every x: no KL, no marginal KL, no information.
    vae = make_vae()
    head = vae.guide_net
    with torch.no_grad():
        for layer in (head.loc, head.raw_scale):
            layer.weight.zero_()
            layer.bias.zero_()
        head.raw_scale.bias.fill_(math.log(math.expm1(1.0 - head.min_scale)))
    images = _binary_images(30)
    s = elbo_surgery(vae, images, average_kl=0.0, samples=200)
    assert abs(s.marginal_kl) < 1e-4 and abs(s.mutual_information) < 1e-4
    assert s.mutual_information_bound == pytest.approx(math.log(30))


def test_elbo_surgery_of_a_deterministic_code_has_information_near_log_n(make_vae):
    # Images far apart with tiny posterior scales: the aggregate posterior is N
    # separated spikes, so I(x; z) reaches its bound log N.
    vae = make_vae(latent_dim=2)
    head = vae.guide_net
    images = torch.eye(16).reshape(16, 1, 4, 4)
    with torch.no_grad():
        vae.encoder.net[0].weight.zero_()
        vae.encoder.net[0].bias.zero_()
        vae.encoder.net[0].weight[:, :] = torch.randn(16, 16) * 3
        head.raw_scale.weight.zero_()
        head.raw_scale.bias.fill_(-12.0)  # scale ~ 1e-4 (the floor)
    with torch.no_grad():
        average_kl = float(kl_divergence(vae.qz(images), vae.prior()).mean())
    s = elbo_surgery(vae, images, average_kl=average_kl, samples=1600)
    # I(x; z) = average KL - KL(q(z) || p(z)) = log N for disjoint spikes; the Monte Carlo
    # sd of the estimate with 1600 draws is about 0.025 nats.
    assert s.mutual_information == pytest.approx(math.log(16), abs=0.05)


def test_gaps_on_ppca_add_up_and_find_the_mean_field_gap():
    ppca, vae, x, posterior = ppca_with_marginal_guide(n=3)
    gaps = inference_gaps(vae, x, k=2000, kind="normal", steps=600)
    exact = ppca.log_marginal(x.flatten(1)).double()
    # log p(x) from IS is close to exact; the gaps add up to log p(x) - ELBO(q).
    assert gaps.log_px == pytest.approx(float(exact.mean()), abs=0.05)
    total = gaps.log_px - gaps.elbo_amortized
    assert gaps.approximation_gap + gaps.amortization_gap == pytest.approx(total, abs=1e-9)
    # The best mean-field q* of a Gaussian posterior with covariance S has the exact
    # mean and variances 1 / (S^-1)_ii, and KL(q* || p) = (sum_i log (S^-1)_ii + log det S) / 2:
    # that is the approximation gap (0.83 nats here). Tolerance 0.1 nats for the stochastic fit.
    cov = posterior.covariance_matrix[0].double()
    expected = 0.5 * (torch.linalg.inv(cov).diagonal().log().sum() + torch.logdet(cov))
    assert gaps.approximation_gap == pytest.approx(float(expected), abs=0.1)
    # q* (conditional sds) beats the amortized q (wider marginal sds).
    assert gaps.amortization_gap > 0.05


def test_evaluate_cli_writes_json_and_table(tmp_path, tiny_config):
    from pyrovae.cli import main
    from pyrovae.training import train

    tiny_config.train.epochs = 1
    train(tiny_config, tmp_path / "run", progress=False, log=lambda _: None)
    out = tmp_path / "eval.json"
    result = CliRunner().invoke(
        main,
        ["evaluate", "--run", str(tmp_path / "run"), "-k", "8", "-n", "20", "--json", str(out)],
    )
    assert result.exit_code == 0, result.output
    assert "log p(x) (IS, K=8)" in result.output
    figures = json.loads(out.read_text())
    assert figures["n"] == 20 and figures["k"] == 8 and figures["split"] == "test"
    assert figures["log_px"] <= 0 and figures["surgery"]["mutual_information_bound"] > 0
    # A --json whose folder cannot be made (a file is in the way): one line, no traceback.
    bad = ["evaluate", "--run", str(tmp_path / "run"), "-k", "2", "--json", str(out / "e.json")]
    result = CliRunner().invoke(main, bad)
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert "cannot create the output folder" in result.output


def test_evaluate_cli_without_a_run_is_one_line_error(tmp_path):
    from pyrovae.cli import main

    result = CliRunner().invoke(main, ["evaluate", "--run", str(tmp_path / "nothing")])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and "Error" in result.output


def test_mvn_proposal_has_the_batch_shape_the_helpers_expect():
    # The helpers take any proposal with batch (B,) and event (L,): check a full-covariance one.
    ppca, vae, x, posterior = ppca_with_marginal_guide(n=3)
    proposal = MultivariateNormal(posterior.loc, posterior.covariance_matrix)
    log_px, _ = importance_batch(vae, x, 10, 5, proposal)
    assert log_px.shape == (3,)


def test_evaluate_run_is_seeded_and_leaves_the_callers_rng_alone(tmp_path, tiny_config):
    from pyrovae.evaluation import evaluate_run
    from pyrovae.training import train

    tiny_config.train.epochs = 1
    train(tiny_config, tmp_path / "run", progress=False, log=lambda _: None)
    state = torch.get_rng_state()
    first = evaluate_run(tmp_path / "run", k=2, n=4, seed=5)
    assert torch.equal(torch.get_rng_state(), state)
    assert evaluate_run(tmp_path / "run", k=2, n=4, seed=5).log_px == first.log_px
