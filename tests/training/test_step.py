"""Tests of :mod:`pyrovae.training.step`: the fast training step gives the numbers of
plain Pyro SVI (:class:`pyro.infer.SVI` with :class:`pyro.optim.Adam` and the
same ELBO class) for every registered guide and prior, and falls back to
Pyro's estimator where its direct evaluation does not apply."""

from __future__ import annotations

import pyro
import pytest
import torch
from pyro.infer import SVI, TraceMeanField_ELBO

from pyrovae.config import OBJECTIVES, ModelConfig, TrainConfig
from pyrovae.errors import ConfigError
from pyrovae.inference.objectives import make_elbo, make_objective
from pyrovae.model.guides.base import GUIDES
from pyrovae.model.likelihoods.base import LIKELIHOODS
from pyrovae.model.priors.base import PRIORS
from pyrovae.model.spec import model_config, resolve
from pyrovae.model.vae import VAE
from pyrovae.training.step import TrainStep, direct_applies, make_optimizer, train_epoch

BATCH = 6
LR = 1e-2


def _model_config(guide: str = "normal", prior: str = "normal") -> ModelConfig:
    options: dict[str, object] = {}
    if GUIDES.get(guide).option("flows") or PRIORS.get(prior).option("flows"):
        options.update(flows=2, flow_hidden=(8,))
    if PRIORS.get(prior).option("prior_components"):
        options["prior_components"] = 3
    try:
        config = model_config(
            data_shape=(1, 4, 4), hidden=(16,), latent_dim=3, guide=guide, prior=prior, **options
        )
        resolve(config)
    except ConfigError as err:
        pytest.skip(f"not a valid combination: {err}")
    return config


def _twin_vaes(config: ModelConfig) -> tuple[VAE, VAE]:
    """Two VAEs with equal parameters."""
    torch.manual_seed(0)
    first = VAE(config)
    torch.manual_seed(0)
    second = VAE(config)
    second.load_state_dict(first.state_dict())
    return first, second


def _batch() -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.bernoulli(torch.rand(BATCH, 1, 4, 4, generator=generator), generator=generator)


def _grads(vae: VAE) -> dict[str, torch.Tensor]:
    return {
        name: p.grad.clone() if p.grad is not None else torch.zeros_like(p)
        for name, p in vae.named_parameters()
    }


#: Adam divides each coordinate by its own gradient scale, so a coordinate whose
#: gradient is rounding noise in both paths (a spline bin at zero) can move by
#: up to LR per step either way; parameters after a few steps are compared at LR / 10.
PARAM_TOL = {"rtol": 1e-4, "atol": LR / 10}


def _assert_close_dicts(
    a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], **tol: float
) -> None:
    tol = tol or PARAM_TOL
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], **tol)


def _svi_trajectory(
    vae: VAE, objective, x: torch.Tensor, steps: int, beta: float = 1.0
) -> list[float]:
    """Mean losses of ``steps`` SVI steps with ``pyro.optim.Adam``, seeded as the fast ones.

    SVI minimizes the summed loss, the trainer the mean: Adam with its ``eps``
    multiplied by the batch size takes the same steps on the sum.
    """
    pyro.clear_param_store()
    adam = pyro.optim.Adam({"lr": LR, "eps": 1e-8 * x.shape[0]})
    svi = SVI(vae.model, vae.guide, adam, loss=objective)
    losses = []
    for i in range(steps):
        torch.manual_seed(100 + i)
        losses.append(svi.step(x, beta=beta) / x.shape[0])
    return losses


def _fast_trajectory(
    step: TrainStep, x: torch.Tensor, steps: int, beta: float = 1.0
) -> list[float]:
    losses = []
    for i in range(steps):
        torch.manual_seed(100 + i)
        losses.append(step(x, beta=beta).item() / x.shape[0])
    return losses


ELBO_CASES = [("meanfield", 1), ("trace", 1), ("meanfield", 3), ("trace", 3)]


@pytest.mark.parametrize("elbo, particles", ELBO_CASES, ids=lambda v: str(v))
@pytest.mark.parametrize("prior", PRIORS.names())
@pytest.mark.parametrize("guide", GUIDES.names())
def test_fast_step_equals_pyro(guide, prior, elbo, particles):
    """Same loss and gradients as Pyro's differentiable_loss on the same random
    numbers, then the same trajectory as pyro.infer.SVI with pyro.optim.Adam."""
    config = _model_config(guide, prior)
    x = _batch()
    fast_vae, pyro_vae = _twin_vaes(config)
    beta = 0.7  # the KL weight of warm-up scales the latent site

    step = TrainStep(
        fast_vae, make_elbo(elbo, particles), make_optimizer(fast_vae.parameters(), LR)
    )
    torch.manual_seed(7)
    loss = step.loss(x, beta=beta)
    assert step.direct is True, "the direct evaluation should apply to this guide and prior"
    (loss / BATCH).backward()
    torch.manual_seed(7)
    reference = make_elbo(elbo, particles).differentiable_loss(
        pyro_vae.model, pyro_vae.guide, x, beta=beta
    )
    (reference / BATCH).backward()
    torch.testing.assert_close(loss, reference, rtol=1e-5, atol=1e-5)
    _assert_close_dicts(_grads(fast_vae), _grads(pyro_vae), rtol=1e-4, atol=1e-6)

    fast_vae.zero_grad()
    pyro_vae.zero_grad()
    fast_losses = _fast_trajectory(step, x, steps=3, beta=beta)
    svi_losses = _svi_trajectory(pyro_vae, make_elbo(elbo, particles), x, steps=3, beta=beta)
    assert fast_losses == pytest.approx(svi_losses, rel=1e-4, abs=1e-5)
    _assert_close_dicts(dict(fast_vae.named_parameters()), dict(pyro_vae.named_parameters()))


def test_beta_is_an_argument_of_the_step_not_state_of_the_model():
    """The same VAE and random numbers: β weights the KL term of this call only."""
    torch.manual_seed(0)
    vae = VAE(_model_config())
    step = TrainStep(vae, make_elbo("meanfield"), make_optimizer(vae.parameters(), LR))
    x = _batch()
    losses = {}
    for beta in (1.0, 0.25, 1.0):
        torch.manual_seed(5)
        losses.setdefault(beta, []).append(step.loss(x, beta=beta).item())
    assert losses[1.0][0] == losses[1.0][1]  # nothing left behind by the β = 0.25 call
    assert losses[0.25][0] < losses[1.0][0]  # a smaller weight on a positive KL
    assert not hasattr(vae, "beta")


class _SubclassedELBO(TraceMeanField_ELBO):
    """A subclass may change the estimator: the direct evaluation must not assume it."""


@pytest.mark.parametrize("obs_scale", ["pixel", "0.3"])
@pytest.mark.parametrize("likelihood", LIKELIHOODS.names())
def test_fast_step_equals_pyro_for_every_likelihood(likelihood, obs_scale):
    if obs_scale != "pixel" and likelihood != "gaussian":
        pytest.skip("obs_scale applies to the gaussian likelihood")
    config = _model_config()
    scale = {"obs_scale": obs_scale} if likelihood == "gaussian" else {}
    config = model_config(config, likelihood=likelihood, **scale)
    x = _batch()
    if not LIKELIHOODS.get(likelihood).binary:
        x = torch.rand(x.shape, generator=torch.Generator().manual_seed(2))  # intensities
    fast_vae, pyro_vae = _twin_vaes(config)
    step = TrainStep(fast_vae, make_elbo("meanfield"), make_optimizer(fast_vae.parameters(), LR))
    fast_losses = _fast_trajectory(step, x, steps=3)
    assert step.direct is True
    svi_losses = _svi_trajectory(pyro_vae, make_elbo("meanfield"), x, steps=3)
    assert fast_losses == pytest.approx(svi_losses, rel=1e-4, abs=1e-5)
    _assert_close_dicts(dict(fast_vae.named_parameters()), dict(pyro_vae.named_parameters()))


def _fallback_objectives() -> dict[str, object]:
    objectives: dict[str, object] = {
        "subclass": _SubclassedELBO(max_plate_nesting=1),
        "sequential-particles": TraceMeanField_ELBO(num_particles=2, max_plate_nesting=1),
    }
    for name in OBJECTIVES:
        if name != "elbo":
            objectives[name] = make_objective(TrainConfig(objective=name, particles=3))
    return objectives


@pytest.mark.parametrize("name", list(_fallback_objectives()))
def test_other_objectives_take_pyros_path(name):
    objective = _fallback_objectives()[name]
    assert not direct_applies(objective)
    x = _batch()
    fast_vae, pyro_vae = _twin_vaes(_model_config())
    step = TrainStep(fast_vae, objective, make_optimizer(fast_vae.parameters(), LR))
    fast_losses = _fast_trajectory(step, x, steps=2)
    assert step.direct is False
    svi_losses = _svi_trajectory(pyro_vae, _fallback_objectives()[name], x, steps=2)
    assert fast_losses == pytest.approx(svi_losses, rel=1e-4, abs=1e-5)
    _assert_close_dicts(dict(fast_vae.named_parameters()), dict(pyro_vae.named_parameters()))


class _VAEWithExtraFactor(VAE):
    """A model with a term the standard VAE does not have."""

    def model(self, x):
        z = super().model(x)
        pyro.factor("penalty", -(z**2).sum())
        return z


def test_a_model_the_direct_evaluation_does_not_match_falls_back():
    torch.manual_seed(0)
    vae = _VAEWithExtraFactor(_model_config())
    objective = make_elbo("meanfield")
    step = TrainStep(vae, objective, make_optimizer(vae.parameters(), LR))
    x = _batch()
    torch.manual_seed(3)
    with pytest.warns(RuntimeWarning, match="differs from Pyro's estimator"):
        loss = step.loss(x)
    assert step.direct is False
    torch.manual_seed(3)
    torch.testing.assert_close(loss, objective.differentiable_loss(vae.model, vae.guide, x))


def test_the_check_consumes_no_randomness():
    torch.manual_seed(0)
    vae = VAE(_model_config())
    step = TrainStep(vae, make_elbo("meanfield"), make_optimizer(vae.parameters(), LR))
    before = torch.get_rng_state()
    assert step._direct_matches_pyro(_batch(), 1.0)
    assert torch.equal(before, torch.get_rng_state())


def test_fast_false_runs_pyro():
    torch.manual_seed(0)
    vae = VAE(_model_config())
    step = TrainStep(vae, make_elbo("meanfield"), make_optimizer(vae.parameters(), LR), fast=False)
    step(_batch())
    assert step.direct is False


def test_train_epoch_covers_every_image_once_and_restores_validation():
    torch.manual_seed(0)
    vae = VAE(_model_config())
    step = TrainStep(vae, make_elbo("meanfield"), make_optimizer(vae.parameters(), LR))
    images = (torch.rand(10, 1, 4, 4) * 255).to(torch.uint8)
    seen: list[int] = []

    betas: list[float] = []

    class Recorder(TrainStep):
        def __call__(self, x, n_total=None, *, beta=1.0):
            seen.append(x.shape[0])
            betas.append(beta)
            return super().__call__(x, n_total, beta=beta)

    recorder = Recorder(vae, step.objective, step.optimizer)
    total = train_epoch(
        recorder, images, torch.randperm(10), 4, binarize=True, beta=lambda i: 0.5 + i / 10
    )
    assert seen == [4, 4, 2]
    assert betas == [0.5, 0.6, 0.7]
    assert total.ndim == 0 and torch.isfinite(total)
    assert pyro.infer.util.is_validation_enabled()

    seen.clear()
    train_epoch(recorder, images, torch.randperm(10), 4, binarize=True, shard=(1, 2))
    assert seen == [2, 2, 1]  # rank 1's half of each global batch


def test_empty_shard_contributes_zero_gradients():
    torch.manual_seed(0)
    vae = VAE(_model_config())
    step = TrainStep(vae, make_elbo("meanfield"), make_optimizer(vae.parameters(), LR))
    seen = []
    step.gradient_hook = lambda params: seen.append([p.grad.abs().sum().item() for p in params])
    loss = step(torch.zeros(0, 1, 4, 4), n_total=1)
    assert loss.item() == 0.0 and seen and all(total == 0.0 for total in seen[0])


@pytest.mark.gpu
def test_fast_step_on_cuda_equals_pyro():
    config = _model_config()
    fast_vae, pyro_vae = (vae.cuda() for vae in _twin_vaes(config))
    x = _batch().cuda()
    step = TrainStep(fast_vae, make_elbo("meanfield"), make_optimizer(fast_vae.parameters(), LR))
    torch.manual_seed(7)
    loss = step.loss(x)
    assert step.direct is True
    torch.manual_seed(7)
    reference = make_elbo("meanfield").differentiable_loss(pyro_vae.model, pyro_vae.guide, x)
    torch.testing.assert_close(loss, reference, rtol=1e-5, atol=1e-5)
