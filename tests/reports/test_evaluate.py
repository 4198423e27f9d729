"""Tests of pyrovae/evaluation.py and the ``pyrovae evaluate`` command, against the exact
log p(x) of probabilistic PCA where one exists."""

from __future__ import annotations

import io
import json
import math
import sys

import pytest
import torch
from click.testing import CliRunner
from pyro.distributions import MultivariateNormal
from torch.distributions import kl_divergence

from pyrovae.inference.gaps import inference_gaps
from pyrovae.inference.importance import importance_batch, importance_log_marginal
from pyrovae.inference.latent import ACTIVE_UNIT_THRESHOLD
from pyrovae.inference.surgery import SurgeryResult, elbo_surgery
from pyrovae.model.guides.base import GUIDES
from pyrovae.model.ppca import PPCA, linear_gaussian_vae
from pyrovae.model.priors.base import PRIORS
from pyrovae.model.spec import model_config
from pyrovae.model.vae import VAE
from pyrovae.reports.evaluate import EvaluationResult, evaluate, negative_kl_warnings


def ppca_with_marginal_guide(n_dims: int = 12, n_latent: int = 2, n: int = 16, widen: float = 1.0):
    """A PPCA VAE whose amortized guide is N(exact posterior mean, exact marginal sds),
    the sds times ``widen`` (< 1: q narrower than the posterior).

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
    marginal_sd = posterior.covariance_matrix[0].diagonal().sqrt() * widen
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
    estimate = importance_batch(vae, x.flatten(0, 0), k=1000, chunk_size=128)
    log_px, elbo = estimate.log_px, estimate.elbo
    exact = ppca.log_marginal(x.flatten(1)).double()
    # The ELBO is a lower bound with a clear gap here (q is mean-field), IS closes most of it.
    assert bool((elbo < log_px).all())
    assert float((exact - log_px).mean()) < 0.1 * float((exact - elbo).mean())


@pytest.mark.parametrize("chunk_size", [1, 7, 64])
def test_running_logsumexp_is_exact_for_any_chunk(chunk_size):
    # With the exact posterior as proposal every ratio equals p(x), so the chunked
    # log-sum-exp must return log p(x) whatever the chunking.
    ppca, vae, x, posterior = ppca_with_marginal_guide(n=4)
    estimate = importance_batch(vae, x, 64, chunk_size, posterior)
    log_px, elbo = estimate.log_px, estimate.elbo
    exact = ppca.log_marginal(x.flatten(1)).double()
    torch.testing.assert_close(log_px, exact, atol=1e-4, rtol=0)
    torch.testing.assert_close(elbo, exact, atol=1e-4, rtol=0)


def test_importance_log_marginal_rejects_bad_k():
    from pyrovae.errors import ConfigError

    _, vae, x, _ = ppca_with_marginal_guide(n=2)
    with pytest.raises(ConfigError, match="^k must be at least 1"):
        importance_log_marginal(vae, x, k=0)


def test_importance_log_marginal_accepts_uint8_images():
    vae = VAE(model_config(data_shape=(1, 4, 4), hidden=(8,), latent_dim=2))
    images = (torch.rand(6, 1, 4, 4) > 0.5).to(torch.uint8) * 255
    torch.manual_seed(3)
    from_uint8 = importance_log_marginal(vae, images, k=10)
    torch.manual_seed(3)
    from_float = importance_log_marginal(vae, images.float() / 255, k=10)
    torch.testing.assert_close(from_uint8, from_float)


def test_importance_mc_stderr_covers_the_error_against_exact_ppca():
    # The reported Monte Carlo standard error of the mean log p(x), against the exact
    # mean: within 3 of them (the estimator's downward bias, Var/2, is far smaller).
    ppca, vae, x, _ = ppca_with_marginal_guide()
    exact = ppca.log_marginal(x.flatten(1)).double()
    estimate = importance_batch(vae, x, k=1000, chunk_size=250)
    stderr = float(estimate.log_px_var.sum().sqrt() / len(exact))
    assert 0 < stderr < 0.05
    assert abs(float((estimate.log_px - exact).mean())) < 3 * stderr
    # The ELBO's standard error, from the same draws: the mean log-ratio's spread.
    assert bool((estimate.elbo_var > 0).all())


@pytest.mark.parametrize("widen", [1.2, 0.8])
def test_monte_carlo_standard_errors_match_the_spread_of_repeated_estimates(widen):
    # Two-sided: each reported Monte Carlo standard error against the spread of 200
    # repeats. log p(x) and the ELBO share their draws, so the error of their
    # difference counts their covariance, positive where q is wider than the
    # posterior and negative where narrower (the sum of the variances was 0.75 and
    # 1.36 times the spread). Chunks of 64 draws exercise the running sums.
    _, vae, x, _ = ppca_with_marginal_guide(n_latent=1, widen=widen)
    names = ["log_px", "elbo", "log_px_minus_elbo"]
    rows = []
    for repeat in range(200):
        torch.manual_seed(repeat)
        result = evaluate(vae, x, k=200, metrics="logpx,elbo", chunk_size=64)
        rows.append(
            [getattr(result, n) for n in names] + [getattr(result, f"{n}_mc_stderr") for n in names]
        )
    values = torch.tensor(rows, dtype=torch.float64)
    ratios = values[:, :3].std(0) / values[:, 3:].mean(0)
    shown = dict(zip(names, ratios.tolist(), strict=True))
    assert bool(((ratios > 0.8) & (ratios < 1.25)).all()), shown


def _binary_images(n: int = 12) -> torch.Tensor:
    return torch.bernoulli(torch.full((n, 1, 4, 4), 0.3))


def _check_result(result: EvaluationResult, vae: VAE) -> None:
    assert math.isfinite(result.log_px) and math.isfinite(result.elbo)
    assert result.log_px_stderr > 0 and result.log_px_mc_stderr > 0
    assert result.elbo == pytest.approx(result.recon - result.kl)
    assert result.elbo_mc_stderr >= 0 and result.elbo_draws == result.k
    # Bernoulli: a probability mass, so bits/dim are -log2 p(x) / D directly.
    assert result.bits_per_dim == pytest.approx(-result.log_px / (16 * math.log(2)))
    assert 0 <= result.active_units <= vae.n_latent == len(result.unit_variances)
    json.dumps(result.to_dict(), allow_nan=False)  # every figure is plain JSON
    assert result.log_px_minus_elbo == pytest.approx(result.log_px - result.elbo)
    assert result.log_px_minus_elbo_mc_stderr > 0
    assert "log p(x)" in result.format_table()


@pytest.mark.parametrize("guide", GUIDES.names())
def test_evaluate_every_guide(make_vae, guide):
    vae = make_vae(guide=guide)
    result = evaluate(vae, _binary_images(), k=16, gaps=1, gap_steps=5, surgery_draws=20)
    _check_result(result, vae)
    assert result.gaps is not None and result.gaps.n == 1 and result.gaps.iterations > 0
    assert not result.gaps.converged and any("converge" in w for w in result.warnings)
    if getattr(vae.guide_net, "scores_any_z", True):
        assert result.surgery is not None
        s = result.surgery
        assert s.mutual_information <= s.mutual_information_bound
        assert s.average_kl == pytest.approx(s.marginal_kl + s.mutual_information)
    else:
        assert result.surgery is None and any("surgery" in w for w in result.warnings)


@pytest.mark.parametrize("prior", PRIORS.names())
def test_evaluate_every_prior(make_vae, prior):
    vae = make_vae(prior=prior)
    result = evaluate(vae, _binary_images(), k=16, surgery_draws=20)
    _check_result(result, vae)
    assert result.surgery is not None
    s = result.surgery
    assert s.average_kl == pytest.approx(s.marginal_kl + s.mutual_information)


def test_one_importance_sample_gives_json_without_nan(make_vae):
    result = evaluate(make_vae(), _binary_images(), k=1, metrics="logpx")
    assert math.isnan(result.log_px_mc_stderr)  # one draw: no spread to estimate it from
    assert result.to_dict()["log_px_mc_stderr"] is None
    json.dumps(result.to_dict(), allow_nan=False)
    assert any(w.startswith("K = 1: log p(x) is then a one-draw ELBO") for w in result.warnings)


def test_metrics_choose_what_is_computed(make_vae):
    from pyrovae.errors import ConfigError

    vae = make_vae()
    result = evaluate(vae, _binary_images(), k=4, metrics="elbo,active")
    assert result.metrics == ["elbo", "active"]
    assert result.log_px is None and result.bits_per_dim is None and result.surgery is None
    assert result.elbo is not None and result.active_units is not None
    assert "log p(x) (IS" not in result.format_table()
    with pytest.raises(ConfigError, match="--metrics"):
        evaluate(vae, _binary_images(), metrics="logpx,nonsense")
    assert (
        evaluate(vae, _binary_images(), k=4, metrics=["logpx"], gaps=1, gap_steps=2).gaps
        is not None
    )


def _uint8_ppca(n: int = 40, n_dims: int = 12):
    """A PPCA in pixel space (mean 0.5, small spread) and n of its draws stored as uint8."""
    generator = torch.Generator().manual_seed(0)
    weight = 0.1 * torch.randn(n_dims, 2, generator=generator)
    ppca = PPCA(weight=weight, bias=torch.full((n_dims,), 0.5), sigma=0.05)
    pixels = ppca.sample(n, generator).clamp(0, 1) * 255
    return ppca, pixels.round().to(torch.uint8).reshape(n, 1, 1, n_dims)


def test_bits_per_dim_of_a_density_on_8_bit_data_is_a_dequantized_code_length():
    # Exact: -log p(y) + D log 256 with y = (x + u) / 256 the dequantized pixels, from the
    # PPCA's Gaussian marginal at the same u; within 3 reported Monte Carlo standard errors.
    from pyrovae.inference.importance import bits_per_dim

    ppca, images = _uint8_ppca()
    vae = linear_gaussian_vae(ppca)
    _set_exact_posterior_mean_guide(vae, ppca)
    torch.manual_seed(1)
    log_px = importance_batch(vae, images.float() / 255, 8, 8)  # unused by the dequantized path
    bits = bits_per_dim(vae, images, log_px, k=2000)
    torch.manual_seed(1)
    y = (images.float() + torch.rand(images.shape)) / 256
    n_dims = images[0].numel()
    exact = (n_dims * math.log(256) - ppca.log_marginal(y.flatten(1)).double()) / (
        n_dims * math.log(2)
    )
    assert bits.value is not None and bits.mc_stderr is not None
    assert "dequantization" in bits.note
    assert abs(bits.value - float(exact.mean())) < 3 * bits.mc_stderr + 1e-6
    # The old figure, -log2 p(x / 255) / D, is off by about log2(256) = 8 bits.
    assert bits.value > 0


def _set_exact_posterior_mean_guide(vae: VAE, ppca: PPCA) -> None:
    """Make the linear guide's mean the exact posterior mean and its sds the marginal sds."""
    n_latent = ppca.n_latent
    m = ppca.weight.T @ ppca.weight + ppca.sigma**2 * torch.eye(n_latent)
    a = torch.linalg.solve(m, ppca.weight.T)  # (n_latent, n_dims)
    sd = (ppca.sigma**2 * torch.linalg.inv(m)).diagonal().sqrt()
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
        head.raw_scale.bias.copy_(torch.log(torch.expm1(sd - head.min_scale)))


def test_bits_per_dim_are_withheld_for_a_density_on_float_data(make_vae):
    ppca, images = _uint8_ppca(n=6)
    vae = linear_gaussian_vae(ppca)
    result = evaluate(vae, images.float() / 255, k=4, metrics="logpx")
    assert result.bits_per_dim is None and "withheld" in (result.bits_per_dim_note or "")
    assert "withheld" in result.format_table()
    assert evaluate(vae, images, k=4, metrics="logpx").bits_per_dim is not None


def test_active_units_and_collapse_warning(make_vae):
    vae = make_vae(latent_dim=4)
    with torch.no_grad():
        # Units 1..3 ignore x: their E_q[z_u|x] is the same for every image.
        vae.guide_net.loc.weight[1:] = 0.0
        vae.guide_net.loc.weight[0] *= 50.0
    result = evaluate(vae, _binary_images(40), k=4, metrics="active")
    assert result.unit_variances[0] > ACTIVE_UNIT_THRESHOLD
    assert result.unit_variances[1:] == pytest.approx([0.0] * 3, abs=1e-12)
    assert result.active_units == 1
    assert any("posterior collapse" in w for w in result.warnings)


def test_active_units_of_a_closed_form_mean_carry_no_monte_carlo_error(make_vae):
    result = evaluate(make_vae(latent_dim=4), _binary_images(20), k=2, metrics="active")
    assert result.unit_variances_mc_stderr == [0.0] * 4 and result.active_units_uncertain == 0
    assert "MC s.e." not in result.format_table()


def test_sampled_unit_variances_carry_their_monte_carlo_standard_error(make_vae):
    """A planar guide has no closed-form mean, so E_q[z|x] is a mean of draws: the
    reported standard error of each unit's Cov_x(E_q[z_u|x]) matches the spread of the
    estimate over 40 repeats on the same images (pooled over the units; away from 0,
    where the estimate is clamped)."""
    from pyrovae.inference.latent import unit_variances

    torch.manual_seed(0)
    vae = make_vae(guide="planar", latent_dim=4)  # Cov_x of about 0.005-0.012: near 0.01
    images = _binary_images(50)
    repeats = [unit_variances(vae, images) for _ in range(40)]
    estimates = torch.stack([v for v, _ in repeats])  # (40, n_latent)
    reported = torch.stack([e for _, e in repeats]).square().mean(0)
    assert bool((reported > 0).all())
    ratio = float(estimates.var(0).sum() / reported.sum())
    assert 0.6 < ratio < 1.6, ratio


class _SampledMeans(torch.nn.Module):
    """q(z|x) with no closed-form mean (a TransformedDistribution): unit 0's mean
    0.35 x spreads over the images (Cov_x about 0.01), unit 1's is 0 for every image;
    both have Var_q = 1."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # for module_device

    def qz(self, x):
        from torch.distributions import AffineTransform, Normal, TransformedDistribution

        loc = torch.stack([0.35 * x.flatten(1)[:, 0], torch.zeros(x.shape[0])], dim=-1)
        return TransformedDistribution(Normal(loc, 1.0), [AffineTransform(0.0, 1.0)])


@pytest.mark.slow
def test_unit_variance_standard_error_against_the_spread_of_many_repeats():
    """On Gaussian noise of known size (w = 1/100 per image): the spread unit's reported
    standard error matches the spread of its estimate over 400 repeats; the collapsed
    unit's is the noise's own, sqrt(2 N) w / (N - 1), the term that alone remains."""
    from pyrovae.inference.latent import unit_variances

    torch.manual_seed(0)
    images = torch.rand(50, 1, 1, 2)
    repeats = [unit_variances(_SampledMeans(), images) for _ in range(400)]
    estimates = torch.stack([r.variances for r in repeats])
    reported = torch.stack([r.mc_stderr for r in repeats])
    assert float(estimates[:, 0].mean()) == pytest.approx(
        0.35**2 * float(images[:, 0, 0, 0].var()), rel=0.1
    )
    assert float(estimates[:, 0].std() / reported[:, 0].square().mean().sqrt()) == pytest.approx(
        1, abs=0.15
    )
    exact = math.sqrt(2 * 50) * 0.01 / 49
    # Above it by the first term's positive half (clamped at 0, its sum is noise here).
    assert exact <= float(reported[:, 1].mean()) < 1.1 * exact


def test_units_near_the_threshold_are_counted_and_shown(make_vae, monkeypatch):
    import pyrovae.reports.evaluate as evaluate_module

    near = (torch.tensor([0.5, 0.011, 0.009, 0.0], dtype=torch.float64),
            torch.tensor([0.01, 0.002, 0.0005, 0.001], dtype=torch.float64))  # fmt: skip
    monkeypatch.setattr(evaluate_module, "unit_variances", lambda *args: near)
    result = evaluate(make_vae(latent_dim=4), _binary_images(8), k=2, metrics="active")
    assert result.active_units == 2 and result.active_units_uncertain == 1
    assert "2 / 4  (1 within 2 MC s.e. of 0.01)" in result.format_table()
    stderr = result.to_dict()["unit_variances_mc_stderr"]
    assert stderr == pytest.approx([0.01, 0.002, 0.0005, 0.001])


@pytest.mark.parametrize("guide", GUIDES.names())
def test_no_active_units_when_q_ignores_x(make_vae, guide):
    # Constant encoder features: q(z|x) is the same N(0, 1)-wide distribution for every
    # image, so Cov_x(E_q[z_u|x]) = 0 for every unit, also where E_q is a sample mean.
    vae = make_vae(guide=guide)
    with torch.no_grad():
        for p in vae.encoder.parameters():
            p.zero_()
        vae.guide_net.raw_scale.bias.fill_(math.log(math.expm1(1.0)))
    result = evaluate(vae, _binary_images(40), k=2, metrics="active")
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
    s = elbo_surgery(vae, images, draws=200)
    assert s.points == 30 and s.draws == 200 and s.kl_analytic
    assert abs(s.marginal_kl) < 1e-4 and abs(s.mutual_information) < 1e-4
    assert s.mutual_information_bound == pytest.approx(math.log(30))


def _spiky_vae(make_vae, guide: str = "normal"):
    """Images far apart with tiny posterior scales: q(z) is N separated spikes."""
    vae = make_vae(latent_dim=2, guide=guide)
    head = vae.guide_net
    with torch.no_grad():
        vae.encoder.net[0].weight.zero_()
        vae.encoder.net[0].bias.zero_()
        vae.encoder.net[0].weight[:, :] = torch.randn(16, 16) * 3
        head.raw_scale.weight.zero_()
        head.raw_scale.bias.fill_(-12.0)  # scale ~ 1e-4 (the floor)
    return vae, torch.eye(16).reshape(16, 1, 4, 4)


def test_elbo_surgery_of_a_deterministic_code_has_information_near_log_n(make_vae):
    # I(x; z) = average KL - KL(q(z) || p(z)) = log N for disjoint spikes.
    vae, images = _spiky_vae(make_vae)
    s = elbo_surgery(vae, images, draws=160)
    assert s.mutual_information == pytest.approx(math.log(16), abs=1e-3)
    with torch.no_grad():
        kls = kl_divergence(vae.qz(images), vae.prior()).double()
    assert s.average_kl == pytest.approx(float(kls.mean()), rel=1e-5)
    # Over the images: the spread of their closed-form KLs.
    assert s.average_kl_stderr == pytest.approx(float(kls.std() / 4), rel=1e-4)


@pytest.mark.parametrize("guide", ["normal", "iaf"])
def test_mutual_information_never_exceeds_log_n(make_vae, guide):
    # At the bound (disjoint spikes) an estimate that is a difference of two noisy terms
    # (the old average KL minus the marginal KL) lands above log N about half the time;
    # the estimate from log q(z|x_n) - log q(z) <= log N, draw by draw, never does.
    vae, images = _spiky_vae(make_vae, guide)
    for seed in range(5):
        torch.manual_seed(seed)
        s = elbo_surgery(vae, images, draws=32)
        assert s.mutual_information <= s.mutual_information_bound
        assert s.mutual_information_mc_stderr >= 0 and math.isfinite(s.marginal_kl_mc_stderr)


def test_surgery_of_a_flow_guide_is_sized_by_its_budget(make_vae):
    from pyrovae.inference.surgery import SURGERY_MIN, surgery_pair_flops, surgery_size

    flow = make_vae(guide="iaf", latent_dim=3)
    normal = make_vae()
    images = _binary_images(400)
    assert surgery_pair_flops(normal, images) == 0  # a Gaussian density has no matmul
    cost = surgery_pair_flops(flow, images)
    assert cost > 0  # the flow's inverse runs its networks once per unit and layer
    # A budget for 100 x 100 pairs: 100 images and 100 draws, not 400 x 1000.
    assert surgery_size(400, cost, budget=1e4 * cost) == (100, 100)
    assert surgery_size(400, cost, budget=1.0) == (SURGERY_MIN, SURGERY_MIN)
    assert surgery_size(400, 0.0) == (400, 1000)
    s = elbo_surgery(flow, images, budget=1e4 * cost)
    assert (s.points, s.draws) == (100, 100) and not s.kl_analytic
    assert s.average_kl_mc_stderr > 0
    assert s.mutual_information_bound == pytest.approx(math.log(100))
    # Sampled KLs with one draw an image: their spread over images is the per-draw
    # spread, already the Monte Carlo error, so none is given over images; with two or
    # more, each image's mean over its own draws, then their spread over images.
    assert math.isnan(s.average_kl_stderr)
    two = elbo_surgery(flow, images, points=50, draws=100)
    assert (two.points, two.draws) == (50, 100) and 0 < two.average_kl_stderr < math.inf
    fewer = elbo_surgery(flow, images, points=100, draws=60)  # 40 images drew none
    assert math.isnan(fewer.average_kl_stderr) and math.isfinite(fewer.average_kl)
    # Per-image KLs from many cheap draws (those of log p(x)) replace the few pairs' own.
    kl, kl_var = torch.rand(100).double() + 1, torch.full((100,), 1e-4).double()
    s = elbo_surgery(flow, images[:100], budget=1e4 * cost, kl_draws=(kl, kl_var))
    assert s.average_kl == pytest.approx(float(kl.mean()))
    assert s.average_kl_stderr == pytest.approx(float(kl.std() / 10))
    assert s.average_kl_mc_stderr == pytest.approx(0.01 / 100**0.5)
    assert s.marginal_kl == pytest.approx(s.average_kl - s.mutual_information)


def test_surgery_on_part_of_the_images_says_what_its_figures_cover(make_vae):
    vae = make_vae()
    images = _binary_images(40)
    result = evaluate(vae, images, k=2, metrics="surgery", surgery_points=10)
    assert result.surgery is not None and result.surgery.points == 10
    assert any("took 10 of the 40 images" in w and "log 10 = 2.30" in w for w in result.warnings)
    assert "warning: ELBO surgery took 10" in result.format_table()
    whole = evaluate(vae, images, k=2, metrics="surgery")
    assert not any("ELBO surgery took" in w for w in whole.warnings)


def _surgery(marginal_kl: float, stderr: float) -> SurgeryResult:
    return SurgeryResult(
        average_kl=1.0,
        average_kl_mc_stderr=0.0,
        marginal_kl=marginal_kl,
        marginal_kl_mc_stderr=stderr,
        mutual_information=1.0 - marginal_kl,
        mutual_information_mc_stderr=stderr,
        mutual_information_bound=math.log(100),
        points=100,
        draws=1000,
        kl_analytic=True,
    )


def test_a_marginal_kl_below_zero_is_explained_by_its_error_or_flagged():
    assert negative_kl_warnings(_surgery(0.02, 0.01)) == []
    assert negative_kl_warnings(_surgery(0.0, 0.0)) == []
    (within,) = negative_kl_warnings(_surgery(-0.015, 0.01))
    assert "-0.015 ± 0.010 (MC)" in within and "read it as about 0" in within
    (beyond,) = negative_kl_warnings(_surgery(-0.5, 0.1))
    assert "more than 2 standard errors below 0" in beyond and "not to be trusted" in beyond


def test_evaluate_warns_of_a_negative_marginal_kl(make_vae):
    # q(z|x) nearly p(z) for every x: the true marginal KL is about 1e-7, the estimate
    # differs from it by its Monte Carlo error, so some seeds put it below 0.
    vae = make_vae()
    head = vae.guide_net
    with torch.no_grad():
        for layer in (head.loc, head.raw_scale):
            layer.weight.mul_(1e-4)
            layer.bias.zero_()
        head.raw_scale.bias.fill_(math.log(math.expm1(1.0 - head.min_scale)))
    images = _binary_images(30)
    seen = {True: 0, False: 0}
    for seed in range(8):
        torch.manual_seed(seed)
        result = evaluate(vae, images, k=2, metrics="surgery", surgery_draws=60)
        assert result.surgery is not None
        negative = result.surgery.marginal_kl < 0
        seen[negative] += 1
        warned = [w for w in result.warnings if w.startswith("KL(q(z) || p(z)) is estimated")]
        assert len(warned) == int(negative)
        if negative:
            assert "read it as about 0" in warned[0]
            assert f"warning: {warned[0]}" in result.format_table()
    assert seen[True] and seen[False]


def _near_orthogonal_ppca(n_dims: int = 12, n_latent: int = 3) -> PPCA:
    """Columns close to orthogonal: the posterior is almost uncorrelated, so the best
    mean-field q has a small gap (about 0.003 nats here)."""
    generator = torch.Generator().manual_seed(0)
    basis, _ = torch.linalg.qr(torch.randn(n_dims, n_latent, generator=generator))
    weight = basis * torch.tensor([2.0, 1.5, 1.0]) + 0.1 * torch.randn(
        n_dims, n_latent, generator=generator
    )
    return PPCA(weight=weight, bias=0.1 * torch.randn(n_dims, generator=generator), sigma=0.5)


def _gaussian_kl(q_loc, q_cov, posterior) -> torch.Tensor:
    from torch.distributions import MultivariateNormal as MVN

    p = MVN(posterior.loc.double(), posterior.covariance_matrix.double())
    return kl_divergence(MVN(q_loc.double(), q_cov.double()), p)


def test_gaps_on_near_orthogonal_ppca_match_their_closed_forms():
    # Closed forms for a Gaussian posterior N(m, S), precision L = S^-1: the best mean-field
    # q has KL = (sum_i log L_ii - log det L) / 2, the approximation gap; the amortized q's
    # ELBO is log p(x) - KL(q || posterior), so the amortization gap is KL(q || p) - that.
    # Tolerance: two reported Monte Carlo standard errors.
    ppca = _near_orthogonal_ppca()
    vae = linear_gaussian_vae(ppca)
    _set_exact_posterior_mean_guide(vae, ppca)
    x = ppca.sample(4, torch.Generator().manual_seed(1))
    posterior = ppca.posterior(x)
    gaps = inference_gaps(vae, x.reshape(4, 1, 1, 12), k=6000, kind="normal")
    precision = torch.linalg.inv(posterior.covariance_matrix[0].double())
    best = 0.5 * (precision.diagonal().log().sum() - torch.logdet(precision))
    assert 0.001 < float(best) < 0.01
    assert gaps.converged and gaps.iterations > 0
    assert gaps.proposal == ["q", "q* (normal)", "q* (mvn)"]
    assert abs(gaps.approximation_gap - float(best)) < 2 * gaps.approximation_gap_mc_stderr
    with torch.no_grad():
        qz = vae.qz(x.reshape(4, 1, 1, 12))
        amortized_kl = _gaussian_kl(qz.mean, torch.diag_embed(qz.variance), posterior)
    exact_amortization = float(amortized_kl.mean() - best)
    assert abs(gaps.amortization_gap - exact_amortization) < 2 * gaps.amortization_gap_mc_stderr
    exact_log_px = float(ppca.log_marginal(x).mean())
    assert abs(gaps.log_px - exact_log_px) < 3 * gaps.log_px_mc_stderr
    total = gaps.log_px - gaps.elbo_amortized
    assert gaps.approximation_gap + gaps.amortization_gap == pytest.approx(total, abs=1e-9)
    # Each figure's standard error over the 4 images, from its per-image values.
    for name, values in gaps.per_point.items():
        assert gaps.stderr[name] == pytest.approx(float(torch.tensor(values).std() / 2))


def test_full_covariance_gap_of_a_correlated_ppca_is_zero():
    # The best full-covariance Gaussian is the posterior itself: gap 0, within two
    # reported standard errors.
    ppca, vae, x, posterior = ppca_with_marginal_guide(n=3)
    gaps = inference_gaps(vae, x, k=2000, kind="mvn")
    assert gaps.proposal == ["q", "q* (mvn)"]
    assert abs(gaps.approximation_gap) < 2 * gaps.approximation_gap_mc_stderr
    # The mean-field amortized q of this correlated posterior is 0.8 nats short of it.
    assert gaps.amortization_gap > 0.5


@pytest.fixture
def trained_run(tmp_path, tiny_config):
    from pyrovae.api import train

    tiny_config.train.epochs = 1
    train(tiny_config, tmp_path / "run", progress=False, log=lambda _: None)
    return tmp_path / "run"


def test_evaluate_cli_writes_json_and_table(tmp_path, trained_run):
    from pyrovae.cli import main

    out = tmp_path / "eval.json"
    args = ["evaluate", "--run", str(trained_run), "-k", "8", "-n", "20", "--json", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "log p(x) (IS, K=8)" in result.output and "± MC" in result.output
    figures = json.loads(out.read_text())
    assert figures["n"] == 20 and figures["k"] == 8 and figures["split"] == "test"
    assert figures["log_px"] <= 0 and figures["surgery"]["mutual_information_bound"] > 0
    assert figures["log_px_mc_stderr"] > 0 and figures["elbo_mc_stderr"] >= 0
    assert figures["surgery"]["mutual_information_mc_stderr"] >= 0
    # A --json whose folder cannot be made (a file is in the way): one line, no traceback.
    bad = ["evaluate", "--run", str(trained_run), "-k", "2", "--json", str(out / "e.json")]
    result = CliRunner().invoke(main, bad)
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert "cannot create the output folder" in result.output


def test_evaluate_cli_metrics_and_progress(trained_run):
    from pyrovae.cli import main

    args = ["evaluate", "--run", str(trained_run), "-k", "4", "-n", "10", "--no-progress"]
    result = CliRunner().invoke(main, [*args, "--metrics", "elbo"])
    assert result.exit_code == 0, result.output
    assert "ELBO (" in result.output and "log p(x) (IS" not in result.output
    assert "surgery" not in result.output
    result = CliRunner().invoke(main, [*args, "--metrics", "elbo,bogus"])
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert "--metrics" in result.output and "logpx, elbo, active, surgery, gaps" in result.output
    result = CliRunner().invoke(main, [*args, "--metrics", "logpx", "--memory-budget", "2M"])
    assert result.exit_code == 0, result.output
    assert "log p(x) (IS, K=4)" in result.output and "active units" not in result.output
    result = CliRunner().invoke(main, [*args, "--memory-budget", "12 bananas"])
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert "--memory-budget" in result.output
    result = CliRunner().invoke(main, ["evaluate", "--help"])
    assert "--no-progress" in result.output and "--metrics" in result.output
    assert "--memory-budget" in result.output
    assert "dequantized" in result.output


def test_evaluate_and_diagnose_the_training_split_of_a_bernoulli_run(tmp_path, trained_run):
    # The default run binarizes its training images on the fly (--binarize dynamic); an
    # evaluation binarizes them once, with a fixed seed, so the figures repeat.
    from pyrovae.cli import main

    args = ["evaluate", "--run", str(trained_run), "--split", "train", "-k", "4", "-n", "30"]
    first = CliRunner().invoke(main, [*args, "--metrics", "logpx,elbo"])
    assert first.exit_code == 0, first.output
    assert "train set: 30 images" in first.output
    second = CliRunner().invoke(main, [*args, "--metrics", "logpx,elbo"])
    assert first.output.splitlines()[3] == second.output.splitlines()[3]  # the log p(x) row
    args = ["diagnose", "--run", str(trained_run), "--split", "train", "-n", "4"]
    args += ["--draws", "100", "--nuts", "0", "--out", str(tmp_path / "d"), "--no-progress"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "PSIS over 4 points" in result.output


def test_evaluate_cli_without_a_run_is_one_line_error(tmp_path):
    from pyrovae.cli import main

    result = CliRunner().invoke(main, ["evaluate", "--run", str(tmp_path / "nothing")])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and "Error" in result.output


def test_mvn_proposal_has_the_batch_shape_the_helpers_expect():
    # The helpers take any proposal with batch (B,) and event (L,): check a full-covariance one.
    ppca, vae, x, posterior = ppca_with_marginal_guide(n=3)
    proposal = MultivariateNormal(posterior.loc, posterior.covariance_matrix)
    assert importance_batch(vae, x, 10, 5, proposal).log_px.shape == (3,)


def test_evaluate_run_is_seeded_and_leaves_the_callers_rng_alone(trained_run):
    from pyrovae.api import evaluate_run

    state = torch.get_rng_state()
    first = evaluate_run(trained_run, k=2, n=4, seed=5, metrics="logpx,surgery")
    assert torch.equal(torch.get_rng_state(), state)
    second = evaluate_run(trained_run, k=2, n=4, seed=5, metrics="logpx,surgery")
    assert second.log_px == first.log_px and second.surgery == first.surgery


class _Terminal(io.StringIO):
    """A captured stderr that says it is a terminal, where progress bars are drawn."""

    def isatty(self) -> bool:
        return True


def test_progress_bars_for_every_long_step(make_vae, monkeypatch):
    vae = make_vae()
    for progress in (True, False):
        terminal = _Terminal()
        monkeypatch.setattr(sys, "stderr", terminal)
        evaluate(vae, _binary_images(), k=8, gaps=1, gap_steps=2, progress=progress)
        shown = terminal.getvalue()
        steps = ("log p(x), K=8", "active units", "ELBO surgery", "q* (normal)", "q* (mvn)")
        assert all((step in shown) == progress for step in steps), shown
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    evaluate(vae, _binary_images(), k=8, metrics="elbo", progress=True)
    assert "ELBO draws" in terminal.getvalue()
