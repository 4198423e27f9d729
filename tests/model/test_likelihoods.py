from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyrovae.model.context import ModelContext
from pyrovae.model.likelihoods.base import LIKELIHOODS
from pyrovae.model.likelihoods.bernoulli import BinaryBernoulli
from pyrovae.model.likelihoods.gaussian import GaussianLikelihood

SHAPE = (1, 4, 4)
CONTEXT = ModelContext(data_shape=SHAPE, n_latent=2)


@pytest.mark.parametrize("name", LIKELIHOODS.names())
def test_whole_image_is_one_event(name):
    likelihood = LIKELIHOODS.get(name)(CONTEXT)
    decoded = torch.randn(3, 2, *SHAPE)
    px = likelihood(decoded)
    assert px.batch_shape == (3, 2)
    assert px.event_shape == SHAPE
    x = torch.bernoulli(torch.full((2, *SHAPE), 0.5))
    assert px.log_prob(x).shape == (3, 2)
    assert torch.isfinite(px.mean).all()


def test_bernoulli_log_prob_matches_cross_entropy():
    likelihood = LIKELIHOODS.get("bernoulli")(CONTEXT)
    logits = torch.randn(2, *SHAPE)
    x = torch.bernoulli(torch.full((2, *SHAPE), 0.3))
    expected = -torch.nn.functional.binary_cross_entropy_with_logits(
        logits, x, reduction="none"
    ).sum((1, 2, 3))
    torch.testing.assert_close(likelihood(logits).log_prob(x), expected)


def test_bernoulli_fast_log_prob_equals_torchs_with_gradients():
    # BinaryBernoulli's log sigma(l) - (1 - x) l against torch's x l - softplus(l), on
    # logits broadcast over draws, large ones included, values as float, bool and uint8.
    logits = (torch.randn(5, 3, 7) * 20).requires_grad_()
    x = torch.bernoulli(torch.full((3, 7), 0.4))
    fast = BinaryBernoulli(logits=logits)
    reference = dist.Bernoulli(logits=logits)
    expected = reference.log_prob(x)
    for value in (x, x.bool(), x.to(torch.uint8)):
        torch.testing.assert_close(fast.log_prob(value), expected)
    (grad_fast,) = torch.autograd.grad(fast.log_prob(x).sum(), logits)
    (grad_reference,) = torch.autograd.grad(expected.sum(), logits)
    torch.testing.assert_close(grad_fast, grad_reference)
    assert type(fast.expand((2, 5, 3, 7))) is BinaryBernoulli
    # Values with more batch dimensions than the logits, in float64, and grey values
    # scored as a soft observation with validation off (as impute does).
    many = torch.bernoulli(torch.full((2, 5, 3, 7), 0.5, dtype=torch.float64))
    torch.testing.assert_close(fast.log_prob(many), reference.log_prob(many))
    grey = torch.rand(3, 7)
    with pyro.validation_enabled(False):
        soft = BinaryBernoulli(logits=logits, validate_args=False).log_prob(grey)
        torch.testing.assert_close(soft, dist.Bernoulli(logits=logits).log_prob(grey))


def test_bernoulli_rejects_values_outside_its_support_when_validating():
    px = LIKELIHOODS.get("bernoulli")(CONTEXT)(torch.zeros(2, *SHAPE))
    with pyro.validation_enabled(True), pytest.raises(ValueError, match="support"):
        px.log_prob(torch.full((2, *SHAPE), 0.5))


@pytest.mark.parametrize("obs_scale, n_params", [("pixel", 16), ("shared", 1), ("0.25", 0)])
def test_gaussian_scale_modes(obs_scale, n_params):
    likelihood = GaussianLikelihood(
        CONTEXT, **GaussianLikelihood.resolve_options({"obs_scale": obs_scale})
    )
    assert sum(p.numel() for p in likelihood.parameters()) == n_params
    px = likelihood(torch.zeros(1, *SHAPE))
    scale = px.base_dist.scale
    if obs_scale == "0.25":
        assert torch.all(scale == 0.25)
    else:
        assert torch.all(scale > GaussianLikelihood.min_scale)
    # The decoder output is the mean itself: a linear decoder gives PPCA.
    assert torch.all(px.mean == 0)
