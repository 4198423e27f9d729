"""M2: y summed out exactly by TraceEnum_ELBO, observed when given, and p(x) with y
summed out."""

from __future__ import annotations

import math

import pyro
import pytest
import torch
from pyro import poutine

from pyrovae.model.semi_supervised import SemiSupervisedVAE
from pyrovae.model.spec import model_config
from pyrovae.sites import LABEL

K = 3


def make_m2() -> SemiSupervisedVAE:
    config = model_config(kind="m2", data_shape=(1, 4, 4), hidden=(16,), latent_dim=2)
    config.n_classes = K
    return SemiSupervisedVAE(config)


def closed_form_loss(m2: SemiSupervisedVAE, x: torch.Tensor) -> torch.Tensor:
    """-sum_x sum_y q(y|x) [log p(y) p(z) p(x|y,z) - log q(y|x) q(z|x,y)], one z per (y, x)
    drawn as one (K, batch, n_latent) reparameterized draw."""
    classes = torch.arange(K).unsqueeze(-1)  # (K, 1)
    qy = m2.qy(x)
    qz = m2.qz(x, classes)  # batch (K, batch)
    z = qz.rsample()
    log_p = m2.py().log_prob(classes) + m2.prior().log_prob(z) + m2.px(z, classes).log_prob(x)
    log_q = qy.log_prob(classes) + qz.log_prob(z)
    return -(qy.probs.T * (log_p - log_q)).sum()


def test_trace_enum_elbo_sums_over_the_classes_exactly():
    m2 = make_m2()
    x = torch.rand(5, 1, 4, 4).round()
    elbo = pyro.infer.TraceEnum_ELBO(max_plate_nesting=1)
    torch.manual_seed(1)
    enumerated = elbo.differentiable_loss(m2.model, m2.guide, x)
    torch.manual_seed(1)
    expected = closed_form_loss(m2, x)
    torch.testing.assert_close(enumerated, expected)
    # The check can fail: with y sampled (Trace_ELBO ignores the enumeration) it does.
    torch.manual_seed(1)
    with pytest.warns(UserWarning, match="TraceEnum_ELBO"):
        sampled = pyro.infer.Trace_ELBO(max_plate_nesting=1).differentiable_loss(
            m2.model, m2.guide, x
        )
    assert not torch.isclose(sampled, expected, rtol=1e-3)
    # And the method that reports the test ELBO computes the same sum.
    torch.manual_seed(1)
    recon, kl = m2.unlabelled_terms(x)
    torch.testing.assert_close(-(recon - kl).sum(), expected)


def test_a_given_label_is_observed_and_not_guessed():
    m2 = make_m2()
    x, y = torch.rand(4, 1, 4, 4).round(), torch.tensor([0, 1, 2, 1])
    guide = poutine.trace(m2.guide).get_trace(x, y)
    assert LABEL not in guide.nodes
    model = poutine.trace(poutine.replay(m2.model, trace=guide)).get_trace(x, y)
    assert model.nodes[LABEL]["is_observed"]
    assert torch.equal(model.nodes[LABEL]["value"], y)


def test_log_joint_sums_the_label_out():
    m2 = make_m2()
    x, z = torch.rand(5, 1, 4, 4).round(), torch.randn(7, 5, 2)
    per_class = torch.stack([m2.px(z, torch.full((7, 5), c)).log_prob(x) for c in range(K)])
    expected = m2.prior().log_prob(z) + torch.logsumexp(per_class, 0) - math.log(K)
    torch.testing.assert_close(m2.log_joint(x, z), expected)
    assert m2.qz(x).log_prob(z).shape == (7, 5)  # the proposal of importance sampling
    assert m2.classify(x).sum(-1).allclose(torch.ones(5))
