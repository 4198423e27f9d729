"""Tests of pyrovae/inference/moments.py: the moments of q(z|x) against closed forms,
within tolerances set by the standard errors the estimator reports."""

from __future__ import annotations

import math

import pyro.distributions as dist
import pytest
import torch
from torch.distributions.transforms import AffineTransform, ExpTransform

from pyrovae.errors import ConfigError
from pyrovae.inference.moments import posterior_moments, sampled_moments

#: |estimate - truth| / reported standard error allowed on each of 15 entries: the
#: chance that a correct estimator exceeds it on any is about 15 x 6e-5 = 1e-3.
Z_LIMIT = 4.0


def _gaussian(batch: int = 5, n_latent: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    loc = torch.linspace(-2, 2, batch * n_latent).reshape(batch, n_latent)
    scale = torch.linspace(0.2, 1.5, batch * n_latent).reshape(batch, n_latent)
    return loc, scale


def test_closed_form_moments_are_the_distributions_own():
    loc, scale = _gaussian()
    moments = posterior_moments(dist.Normal(loc, scale).to_event(1), draws=10)
    assert torch.equal(moments.mean, loc) and torch.equal(moments.std, scale)
    assert not moments.sampled and moments.mean_se is None and moments.draws is None


def test_a_flow_like_distribution_is_sampled_and_matches_its_closed_form():
    # An affine flow of a Normal: a TransformedDistribution, which has no .mean in torch,
    # whose moments are known: shift + factor * loc and |factor| * scale.
    loc, scale = _gaussian()
    factor, shift = -1.7, 0.3
    qz = dist.TransformedDistribution(
        dist.Normal(loc, scale).to_event(1), [AffineTransform(shift, factor, event_dim=1)]
    )
    moments = posterior_moments(qz, draws=4000)
    assert moments.sampled and moments.draws == 4000
    assert moments.mean_se is not None and moments.std_se is not None
    mean_z = (moments.mean - (shift + factor * loc)) / moments.mean_se
    std_z = (moments.std - abs(factor) * scale) / moments.std_se
    assert float(mean_z.abs().max()) < Z_LIMIT and float(std_z.abs().max()) < Z_LIMIT
    # For a Gaussian the errors are sd / sqrt(n) and about sd / sqrt(2 n).
    true_sd = abs(factor) * scale
    torch.testing.assert_close(moments.mean_se, true_sd / math.sqrt(4000), rtol=0.1, atol=0)
    torch.testing.assert_close(moments.std_se, true_sd / math.sqrt(2 * 4000), rtol=0.15, atol=0)


def test_a_skewed_distribution_gets_the_errors_of_its_kurtosis():
    # exp of a Normal (log-normal): mean exp(mu + s^2/2), var (exp(s^2) - 1) exp(2 mu + s^2).
    mu = torch.zeros(5, 3)
    s = torch.full((5, 3), 0.5)
    qz = dist.TransformedDistribution(dist.Normal(mu, s).to_event(1), [ExpTransform()])
    moments = sampled_moments(qz, draws=20000)
    mean = torch.exp(mu + s**2 / 2)
    sd = ((torch.exp(s**2) - 1) * torch.exp(2 * mu + s**2)).sqrt()
    assert float(((moments.mean - mean) / moments.mean_se).abs().max()) < Z_LIMIT
    assert float(((moments.std - sd) / moments.std_se).abs().max()) < Z_LIMIT
    # Heavier tails than a Gaussian: the sd's error exceeds the Gaussian sd / sqrt(2 n).
    assert bool((moments.std_se > 1.2 * sd / math.sqrt(2 * 20000)).all())


def test_one_draw_is_refused():
    qz = dist.TransformedDistribution(dist.Normal(torch.zeros(2, 3), 1.0).to_event(1), [])
    with pytest.raises(ConfigError, match="at least 2"):
        sampled_moments(qz, draws=1)


@pytest.mark.slow
def test_the_reported_standard_errors_cover_at_the_stated_rate():
    # 400 repetitions x 15 entries: a 1.96-SE interval should hold the truth 95% of the time.
    loc, scale = _gaussian()
    qz = dist.TransformedDistribution(
        dist.Normal(loc, scale).to_event(1), [AffineTransform(0.0, 2.0, event_dim=1)]
    )
    inside_mean = inside_std = 0
    for _ in range(400):
        m = sampled_moments(qz, draws=200)
        inside_mean += int(((m.mean - 2 * loc).abs() < 1.96 * m.mean_se).sum())
        inside_std += int(((m.std - 2 * scale).abs() < 1.96 * m.std_se).sum())
    n = 400 * loc.numel()
    # The binomial standard error of a 0.95 rate over 6000 entries is 0.003.
    assert abs(inside_mean / n - 0.95) < 0.015
    assert abs(inside_std / n - 0.95) < 0.02
