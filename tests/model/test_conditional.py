"""The conditional VAE: conditional sampling, and a likelihood that depends on y."""

from __future__ import annotations

import pyro
import pytest
import torch

from pyrovae.errors import ConfigError
from pyrovae.model.build import check_model_config
from pyrovae.model.conditional import ConditionalVAE
from pyrovae.model.spec import model_config


def make_cvae(**options) -> ConditionalVAE:
    config = model_config(kind="cvae", data_shape=(1, 4, 4), hidden=(16,), latent_dim=2, **options)
    config.n_classes = 3
    return ConditionalVAE(config)


def test_sample_draws_the_requested_class_through_the_decoder():
    cvae = make_cvae()
    torch.manual_seed(1)
    images = cvae.sample(5, label=2)
    assert images.shape == (5, 1, 4, 4)
    torch.manual_seed(1)
    z = cvae.prior.sample(5)
    expected = cvae.px(z, torch.full((5,), 2)).mean
    torch.testing.assert_close(images, expected)
    torch.manual_seed(1)
    assert not torch.allclose(cvae.sample(5, label=0), images)


def test_log_likelihood_depends_on_y():
    cvae = make_cvae()
    x = torch.rand(6, 1, 4, 4).round()
    z = torch.randn(6, 2)
    by_class = torch.stack([cvae.px(z, torch.full((6,), c)).log_prob(x) for c in range(3)])
    assert by_class.shape == (3, 6)
    assert (by_class[0] - by_class[1]).abs().min() > 0
    qz0, qz1 = cvae.qz(x, torch.zeros(6)), cvae.qz(x, torch.ones(6))
    assert not torch.allclose(qz0.mean, qz1.mean)  # q(z|x,y) reads y too


def test_elbo_through_pyro_with_labels():
    cvae = make_cvae()
    x, y = torch.rand(4, 1, 4, 4).round(), torch.tensor([0, 1, 2, 0])
    loss = pyro.infer.Trace_ELBO().differentiable_loss(cvae.model, cvae.guide, x, y)
    assert torch.isfinite(loss)
    with pytest.raises(ConfigError, match="needs the labels"):
        pyro.infer.Trace_ELBO().differentiable_loss(cvae.model, cvae.guide, x)


def test_refuses_a_guide_it_cannot_condition_and_a_label_out_of_range():
    with pytest.raises(ConfigError, match="takes the guide normal"):
        make_cvae(guide="iaf")
    with pytest.raises(ConfigError, match="--label must be from 0 to 2"):
        make_cvae().sample(2, label=3)


@pytest.mark.parametrize("kind", ["cvae", "m2"])
def test_guide_and_prior_are_refused_before_the_data_are_read(kind):
    # No data_shape nor n_classes yet: the check that runs before the data load.
    with pytest.raises(ConfigError, match="takes the guide normal"):
        check_model_config(model_config(kind=kind, guide="iaf"))
    with pytest.raises(ConfigError, match="cannot take the prior 'vamp'"):
        check_model_config(model_config(kind=kind, prior="vamp"))
    check_model_config(model_config(kind=kind, prior="flow"))


def test_elbo_terms_take_the_kl_in_closed_form_or_from_the_draw():
    from pyrovae.model.conditional import kl_or_draw

    x, y = torch.rand(4, 1, 4, 4).round(), torch.tensor([0, 1, 2, 0])
    plain = make_cvae()
    qz = plain.qz(x, y)
    exact = torch.distributions.kl_divergence(qz, plain.prior().expand(qz.batch_shape))
    torch.testing.assert_close(kl_or_draw(qz, plain.prior(), qz.sample()), exact)
    # A flow prior has no closed-form KL: the one-draw estimate log q(z) - log p(z).
    flow = make_cvae(prior="flow")
    recon, kl = flow.elbo_terms(x, y)
    assert recon.shape == kl.shape == (4,) and torch.isfinite(kl).all()
    qz = flow.qz(x, y)
    z = qz.sample()
    torch.testing.assert_close(
        kl_or_draw(qz, flow.prior(), z), qz.log_prob(z) - flow.prior().log_prob(z)
    )
