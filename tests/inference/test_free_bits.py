"""Free bits (:mod:`pyrovae.inference.free_bits`) and the step that trains on them: at
λ = 0 the loss and gradients are today's; a dimension whose batch-mean KL is under λ
gets no gradient from the KL term, one above it the closed-form gradient."""

from __future__ import annotations

import pyro.distributions as dist
import pytest
import torch

from pyrovae.config import RunConfig, TrainConfig
from pyrovae.errors import ConfigError
from pyrovae.inference.free_bits import free_bits_excess, free_bits_kl, per_dimension_kl
from pyrovae.inference.objectives import make_objective
from pyrovae.training.step import TrainStep, check_free_bits, make_optimizer


def _normal(loc: torch.Tensor, scale: torch.Tensor) -> dist.Distribution:
    return dist.Normal(loc, scale).to_event(1)


def test_the_floor_applies_to_each_dimensions_batch_mean_kl_with_its_closed_form_gradient():
    # KL(N(m, 1) || N(0, 1)) = m^2 / 2: dimension 0 has mean KL 2, dimension 1 has 0.005.
    loc = torch.tensor([[2.0, 0.1], [-2.0, -0.1], [2.0, 0.1]], requires_grad=True)
    qz, pz = _normal(loc, torch.ones(3, 2)), _normal(torch.zeros(2), torch.ones(2)).expand((3,))
    kl = per_dimension_kl(qz, pz)
    torch.testing.assert_close(kl, loc.detach() ** 2 / 2)
    term = free_bits_kl(kl, free_bits=1.0)
    torch.testing.assert_close(term, torch.tensor(3 * (2.0 + 1.0)))  # n * (2 + max(1, .005))
    (grad,) = torch.autograd.grad(term, loc)
    # d/dm_i of n * mean_i(m_i^2 / 2) is m_i above the floor; nothing below it.
    torch.testing.assert_close(grad[:, 0], loc.detach()[:, 0])
    assert torch.equal(grad[:, 1], torch.zeros(3))
    # At λ = 0 nothing changes: the excess over the plain KL is 0.
    assert free_bits_excess(qz, pz, 0.0).abs() < 1e-6
    torch.testing.assert_close(free_bits_excess(qz, pz, 1.0), torch.tensor(3 * (1.0 - 0.005)))


def _step_grads(vae, x, *, free_bits: float, fast: bool, recon_only: bool = False):
    """The gradients one step takes (seeded), or those of -log p(x|z) alone."""
    grads: dict[str, torch.Tensor] = {}

    def keep(parameters):
        grads.update({str(i): p.grad.clone() for i, p in enumerate(parameters)
                      if p.grad is not None})  # fmt: skip

    step = TrainStep(vae, make_objective(TrainConfig()), make_optimizer(vae.parameters(), 0.0),
                     fast=fast, gradient_hook=keep, free_bits=free_bits)  # fmt: skip
    torch.manual_seed(3)
    if not recon_only:
        return grads, step, step(x)
    params = [p for p in vae.parameters() if p.requires_grad]
    vae.zero_grad(set_to_none=True)
    z = vae.qz(x).rsample()
    (-vae.log_px(x, z).sum() / x.shape[0]).backward()
    keep(params)
    return grads, step, None


@pytest.mark.parametrize("fast", [True, False], ids=["direct", "pyro"])
def test_lambda_zero_is_todays_loss_and_a_large_lambda_leaves_only_the_reconstruction(
    make_vae, fast
):
    x = torch.rand(8, 1, 4, 4).bernoulli()
    vae = make_vae()
    today, plain, elbo_loss = _step_grads(vae, x, free_bits=0.0, fast=fast)
    tiny, on, _ = _step_grads(vae, x, free_bits=1e-12, fast=fast)
    assert plain.direct == on.direct == fast
    for name in today:
        torch.testing.assert_close(tiny[name], today[name], rtol=1e-5, atol=1e-7)
    # Every dimension under λ = 100 nats: the KL term has no gradient left.
    floored, _, reported = _step_grads(vae, x, free_bits=100.0, fast=fast)
    recon, _, _ = _step_grads(vae, x, free_bits=0.0, fast=fast, recon_only=True)
    for name in recon:
        torch.testing.assert_close(floored[name], recon[name], rtol=1e-5, atol=1e-7)
    # ... and the loss it reports is still the true negative ELBO (same draws).
    torch.testing.assert_close(reported, elbo_loss)


def test_free_bits_is_refused_without_a_per_dimension_analytic_kl(make_vae):
    check_free_bits(make_vae(), 0.5)
    with pytest.raises(ConfigError, match="per-dimension analytic KL.*'iaf'"):
        check_free_bits(make_vae(guide="iaf"), 0.5)
    with pytest.raises(ConfigError, match="per-dimension analytic KL"):
        check_free_bits(make_vae(prior="vamp"), 0.5)
    refused = [{"objective": "iwae"}, {"elbo": "trace"}, {"free_bits": -1.0}]
    for change in refused:
        train = TrainConfig(**{"free_bits": 0.5, **change})
        with pytest.raises(ConfigError, match="--free-bits"):
            RunConfig(train=train).validate()


@pytest.mark.parametrize("particles", [1, 3])
def test_the_direct_and_pyros_paths_give_the_same_free_bits_gradients(make_vae, particles):
    x = torch.rand(8, 1, 4, 4).bernoulli()
    vae = make_vae()
    with torch.no_grad():  # a λ between the dimensions' KLs: some floored, some not
        kl = per_dimension_kl(vae.qz(x), vae.prior().expand((8,))).mean(0)
    # Halfway between two KLs: the median itself sits on clamp's kink, where a path's
    # rounding (the mean over 8 or over 3 x 8 rows) decides the gradient.
    low, middle = kl.sort().values[:2].tolist()
    free_bits = (low + middle) / 2
    assert (kl < free_bits).any() and (kl > free_bits).any()
    grads = {}
    for fast in (True, False):
        kept: dict[str, torch.Tensor] = {}

        def keep(parameters, kept=kept):
            kept.update({str(i): p.grad.clone() for i, p in enumerate(parameters)})

        train = TrainConfig(particles=particles)
        step = TrainStep(vae, make_objective(train), make_optimizer(vae.parameters(), 0.0),
                         fast=fast, gradient_hook=keep, free_bits=free_bits)  # fmt: skip
        torch.manual_seed(5)
        step(x, beta=0.5)
        assert step.direct == fast
        grads[fast] = kept
    for name in grads[True]:
        torch.testing.assert_close(grads[True][name], grads[False][name], rtol=1e-4, atol=1e-6)
