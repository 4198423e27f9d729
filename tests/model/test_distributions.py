"""The cheaper densities of pyrovae.model.distributions give Pyro's values and
gradients: each is checked against the generic form it replaces."""

from __future__ import annotations

import pyro.distributions as dist
import pyro.distributions.transforms as T
import pytest
import torch
from torch.distributions import kl_divergence

from pyrovae.model.distributions import (
    FlowDistribution,
    ReparameterizedNormal,
    Reverse,
    StandardNormal,
)
from pyrovae.model.flows import conditional_made


def _params(batch: int = 5, n: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    loc = torch.randn(batch, n, requires_grad=True)
    raw = torch.randn(batch, n, requires_grad=True)
    return loc, raw


def _grads(total: torch.Tensor, *params: torch.Tensor) -> list[torch.Tensor]:
    return list(torch.autograd.grad(total, params))


@pytest.mark.parametrize("sample_shape", [(), (4,)])
def test_the_density_at_its_own_draw_equals_the_generic_one_with_its_gradients(sample_shape):
    loc, raw = _params()
    torch.manual_seed(1)
    fast = ReparameterizedNormal(loc, raw.exp())
    z = fast.rsample(sample_shape)
    torch.manual_seed(1)
    generic = dist.Normal(loc, raw.exp())
    z_generic = generic.rsample(sample_shape)
    assert torch.equal(z, z_generic)  # the same random stream
    log_q, log_q_generic = fast.log_prob(z), generic.log_prob(z_generic)
    assert log_q.shape == log_q_generic.shape
    assert torch.allclose(log_q, log_q_generic, atol=1e-6)
    # Through the draw, as the ELBO differentiates it (-log sigma: the noise is fixed).
    for got, want in zip(
        _grads(log_q.sum() + z.sum(), loc, raw),
        _grads(log_q_generic.sum() + z_generic.sum(), loc, raw),
        strict=True,
    ):
        assert torch.allclose(got, want, atol=1e-5)


def test_any_other_value_gets_the_generic_density():
    loc, raw = _params()
    q = ReparameterizedNormal(loc, raw.exp())
    z = q.rsample()
    for other in (z.clone(), z + 1.0, torch.zeros_like(z)):
        want = dist.Normal(loc, raw.exp()).log_prob(other)
        assert torch.allclose(q.log_prob(other), want, atol=1e-6)
    assert not torch.allclose(q.log_prob(z + 1.0), q.log_prob(z))
    first = z
    q.rsample()  # a later draw: the first is scored the generic way
    want = dist.Normal(loc, raw.exp()).log_prob(first)
    assert torch.allclose(q.log_prob(first), want, atol=1e-6)


@pytest.mark.parametrize("value_shape", [(5, 3), (3,), (7, 5, 3)])
def test_standard_normal_density_broadcasts_as_the_generic_one(value_shape):
    p = StandardNormal(torch.zeros(5, 3), torch.ones(5, 3))
    value = torch.randn(value_shape, requires_grad=True)
    got, want = p.log_prob(value), dist.Normal(torch.zeros(5, 3), 1.0).log_prob(value)
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-6)
    assert torch.allclose(*_grads(got.sum(), value), *_grads(want.sum(), value))


def test_kl_from_the_standard_normal_equals_torchs_closed_form():
    loc, raw = _params()
    q = ReparameterizedNormal(loc, raw.exp())
    p = StandardNormal(torch.zeros(3), torch.ones(3))
    got = kl_divergence(q.to_event(1), p.expand((5, 3)).to_event(1))
    want = kl_divergence(dist.Normal(loc, raw.exp()), dist.Normal(torch.zeros(3), 1.0)).sum(-1)
    assert got.shape == (5,)
    assert torch.allclose(got, want, atol=1e-6)
    assert all(
        torch.allclose(a, b, atol=1e-6)
        for a, b in zip(_grads(got.sum(), loc, raw), _grads(want.sum(), loc, raw), strict=True)
    )
    # Against another Normal it is torch's general form still.
    other = dist.Normal(torch.ones(3), 2.0)
    assert torch.allclose(
        kl_divergence(q, other), kl_divergence(dist.Normal(loc, raw.exp()), other)
    )


def test_reverse_is_the_reversing_permutation():
    reverse = Reverse(torch.arange(3, -1, -1))
    permute = T.Permute(torch.arange(3, -1, -1))
    x = torch.randn(6, 4, requires_grad=True)
    assert torch.equal(reverse(x), permute(x))
    assert torch.equal(reverse.inv(x), permute.inv(x))
    weights = torch.randn(6, 4)
    assert torch.equal(
        *_grads((reverse(x) * weights).sum(), x), *_grads((permute(x) * weights).sum(), x)
    )


def _iaf_flow(base: dist.TorchDistribution, context: torch.Tensor, cls: type) -> dist.Distribution:
    torch.manual_seed(3)
    layers = [conditional_made(4, 6, (16,)) for _ in range(3)]
    transforms: list = []
    for i, made in enumerate(layers):
        if i > 0:
            transforms.append(Reverse(torch.arange(3, -1, -1)))
        transforms.append(T.ConditionalAffineAutoregressive(made).condition(context))
    return cls(base, transforms)


def test_flow_density_leaves_out_only_the_zero_log_determinants():
    loc, raw = torch.randn(5, 4, requires_grad=True), torch.randn(5, 4, requires_grad=True)
    context = torch.randn(5, 6)
    fast = _iaf_flow(ReparameterizedNormal(loc, raw.exp()).to_event(1), context, FlowDistribution)
    torch.manual_seed(4)
    z = fast.rsample()
    generic = _iaf_flow(
        dist.Normal(loc, raw.exp()).to_event(1), context, dist.TransformedDistribution
    )
    torch.manual_seed(4)
    z_generic = generic.rsample()
    assert torch.allclose(z, z_generic)
    got, want = fast.log_prob(z), generic.log_prob(z_generic)
    assert got.shape == want.shape == (5,)
    assert torch.allclose(got, want, atol=1e-5)
    for a, b in zip(_grads(got.sum(), loc, raw), _grads(want.sum(), loc, raw), strict=True):
        assert torch.allclose(a, b, atol=1e-5)
    # At codes it did not draw (the flow is inverted): the same density too.
    other = torch.randn(5, 4)
    assert torch.allclose(fast.log_prob(other), generic.log_prob(other), atol=1e-5)


@pytest.mark.parametrize(("guide", "prior"), [("iaf", "normal"), ("normal", "flow")])
def test_a_models_densities_equal_pyros_generic_forms(make_vae, guide, prior):
    vae = make_vae(guide=guide, prior=prior, flows=2)
    x = torch.bernoulli(torch.full((6, 1, 4, 4), 0.5))
    qz = vae.qz(x)
    z = qz.rsample()
    if guide == "iaf":
        assert isinstance(qz, FlowDistribution)
        # Pyro's Normal and TransformedDistribution, the layers' caches giving the base
        # draw back: the generic density at the same draw.
        normal = qz.base_dist.base_dist
        base = dist.Normal(normal.loc, normal.scale).to_event(1)
        plain = dist.TransformedDistribution(base, qz.transforms)
        assert torch.allclose(qz.log_prob(z), plain.log_prob(z), atol=1e-5)
    pz = vae.prior()
    if prior == "flow":
        assert isinstance(pz, FlowDistribution)
        base = dist.Normal(pz.base_dist.base_dist.loc, pz.base_dist.base_dist.scale).to_event(1)
        plain_prior = dist.TransformedDistribution(base, pz.transforms)
    else:
        plain_prior = dist.Normal(torch.zeros(3), 1.0).to_event(1)
    assert torch.allclose(pz.log_prob(z), plain_prior.log_prob(z), atol=1e-5)


def test_a_draw_changed_in_place_or_made_without_gradients_gets_the_generic_density():
    loc, raw = _params()
    q = ReparameterizedNormal(loc, raw.exp())
    z = q.rsample()
    with torch.no_grad():
        z.mul_(3.0)  # in place, after the draw
    want = dist.Normal(loc, raw.exp()).log_prob(z)
    assert torch.allclose(q.log_prob(z), want, atol=1e-6)
    # Drawn without gradients, scored with them: the score function's gradient.
    with torch.no_grad():
        z = q.rsample()
    got, want = q.log_prob(z), dist.Normal(loc, raw.exp()).log_prob(z)
    assert torch.allclose(got, want, atol=1e-6)
    assert torch.allclose(*_grads(got.sum(), loc), *_grads(want.sum(), loc), atol=1e-6)
