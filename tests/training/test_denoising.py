"""The training step with a corruption (denoising criterion) and a sparsity penalty,
in the direct and in Pyro's path."""

from __future__ import annotations

import pytest
import torch
from sklearn.datasets import load_digits
from torch.distributions import kl_divergence

from pyrovae.config import TrainConfig
from pyrovae.errors import ConfigError
from pyrovae.inference.objectives import make_elbo
from pyrovae.model.build import make_model
from pyrovae.model.corruption import MaskNoise
from pyrovae.model.sparsity import SparsityPenalty, mean_activation
from pyrovae.model.spec import model_config
from pyrovae.model.vae import VAE
from pyrovae.training.step import TrainStep, check_regularizers, make_optimizer

BATCH = 6


def _model(kind: str, seed: int = 0) -> VAE:
    torch.manual_seed(seed)
    return make_model(model_config(kind=kind, data_shape=(1, 4, 4), hidden=(16,), latent_dim=3))


def _batch() -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.bernoulli(torch.rand(BATCH, 1, 4, 4, generator=generator), generator=generator)


def _loss_given(model: VAE, x_in: torch.Tensor, scored: torch.Tensor) -> float:
    """The negative ELBO with the encoder on ``x_in`` and the likelihood on ``scored``,
    drawing z as the step does."""
    with torch.no_grad():
        qz = model.qz(x_in)
        z = qz.rsample()
        log_px = model.px(z).log_prob(scored)
        kl = kl_divergence(qz, model.prior().expand(qz.batch_shape)) if model.has_prior else 0.0
        return float(-(log_px - kl).sum())


@pytest.mark.parametrize("fast", [True, False], ids=["direct", "pyro"])
@pytest.mark.parametrize("kind", ["vae", "ae"])
def test_denoising_step_scores_the_clean_x(kind, fast):
    model, x, corruption = _model(kind), _batch(), MaskNoise(0.5)
    torch.manual_seed(5)
    x_tilde = corruption(x)  # the step's first draw, on the same seed
    expected = _loss_given(model, x_tilde, scored=x)
    torch.manual_seed(5)
    wrong = _loss_given(model, x_tilde, scored=x_tilde)
    plain = _loss_given(model, x, scored=x)
    # The test can tell the three apart (an untrained autoencoder barely reads its input).
    assert abs(expected - wrong) > 0.1 and abs(expected - plain) > 1e-3 * abs(expected)
    step = TrainStep(
        model, make_elbo("meanfield"), make_optimizer(model.parameters(), 1e-3),
        fast=fast, corruption=corruption,
    )  # fmt: skip
    torch.manual_seed(5)
    assert step(x).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("fast", [True, False], ids=["direct", "pyro"])
def test_sparsity_is_trained_on_but_reported_apart_from_the_elbo(fast):
    penalty = SparsityPenalty(0.05, weight=3.0)
    plain, sparse, x = _model("vae"), _model("vae"), _batch()
    with torch.no_grad():
        expected_kl = penalty.kl(sparse.encoder(x)).item() * BATCH
    steps = [
        TrainStep(model, make_elbo("meanfield"), make_optimizer(model.parameters(), 1e-2),
                  fast=fast, sparsity=sparsity)
        for model, sparsity in ((plain, None), (sparse, penalty))
    ]  # fmt: skip
    losses = []
    for step in steps:
        torch.manual_seed(3)
        losses.append(step(x).item())
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)  # the ELBO alone
    reported = steps[1].take_sparsity()
    assert reported is not None and reported.item() == pytest.approx(expected_kl, rel=1e-5)
    assert steps[1].take_sparsity().item() == 0.0  # taken: reset
    assert steps[0].take_sparsity() is None
    first_layer = next(iter(sparse.encoder.parameters()))
    assert not torch.equal(first_layer, next(iter(plain.encoder.parameters())))


def test_check_regularizers_reads_the_config():
    corruption, sparsity = check_regularizers(
        TrainConfig(corrupt="gaussian:0.1", sparsity=0.1, sparsity_weight=2.0)
    )
    assert corruption is not None and corruption.spec == "gaussian:0.1"
    assert sparsity == SparsityPenalty(0.1, 2.0)
    assert check_regularizers(TrainConfig()) == (None, None)
    with pytest.raises(ConfigError, match="--corrupt"):
        check_regularizers(TrainConfig(corrupt="mask:2"))
    with pytest.raises(ConfigError, match="give --sparsity too"):
        check_regularizers(TrainConfig(sparsity_weight=3.0))


def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.tensor(load_digits().images, dtype=torch.float32).unsqueeze(1) / 16
    binary = (images > 0.5).float()  # (1797, 1, 8, 8)
    return binary[:1400], binary[1400:]


def _train(model: VAE, train: torch.Tensor, steps: int, **options: object) -> None:
    step = TrainStep(
        model, make_elbo("meanfield"), make_optimizer(model.parameters(), 1e-2), **options
    )
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        step(train[torch.randint(0, train.shape[0], (64,), generator=generator)])


@pytest.mark.slow
def test_sparsity_lowers_the_mean_activation_in_training():
    train, test = _digits()
    activations = []
    for sparsity in (None, SparsityPenalty(0.05, weight=3.0)):
        torch.manual_seed(0)
        model = make_model(
            model_config(kind="ae", data_shape=(1, 8, 8), hidden=(16,), latent_dim=2)
        )
        _train(model, train, 150, sparsity=sparsity)
        with torch.no_grad():
            activations.append(mean_activation(model.encoder(test)).mean().item())
    plain, sparse = activations
    assert sparse < 0.5 * plain, activations
