from __future__ import annotations

import pytest
import torch

from pyrovae.model.context import ModelContext
from pyrovae.model.likelihoods.base import LIKELIHOODS
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
