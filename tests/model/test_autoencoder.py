"""The deterministic autoencoder: a flat prior and a Delta guide at the guide head's mean,
whose ELBO is the reconstruction log-likelihood."""

from __future__ import annotations

import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from sklearn.datasets import load_digits

from pyrovae.errors import ConfigError
from pyrovae.inference.objectives import make_elbo
from pyrovae.model.autoencoder import Autoencoder
from pyrovae.model.build import check_model_config, make_model
from pyrovae.model.spec import model_config
from pyrovae.reports.evaluate import evaluate
from pyrovae.training.step import TrainStep, make_optimizer


def _ae(data_shape: tuple[int, ...] = (1, 4, 4), **options: object) -> Autoencoder:
    model = make_model(
        model_config(kind="ae", data_shape=data_shape, hidden=(16,), latent_dim=2, **options)
    )
    assert isinstance(model, Autoencoder)
    return model


def _binary(n: int, shape: tuple[int, ...] = (1, 4, 4)) -> torch.Tensor:
    return torch.bernoulli(torch.full((n, *shape), 0.5))


def test_the_code_is_the_normal_guide_heads_mean():
    ae, x = _ae(), _binary(5)
    qz = ae.qz(x)
    assert isinstance(qz, dist.Delta) and qz.event_shape == (2,) and qz.batch_shape == (5,)
    head = ae.amortized_guide.head
    assert head is not None
    assert torch.equal(qz.sample(), head(ae.encoder(x)).mean)


@pytest.mark.parametrize("elbo", [Trace_ELBO, TraceMeanField_ELBO])
def test_pyros_elbo_of_the_autoencoder_is_the_reconstruction_log_likelihood(elbo):
    ae, x = _ae(), _binary(7)
    expected = -ae.px(ae.encode(x)).log_prob(x).sum()
    loss = elbo().differentiable_loss(ae.model, ae.guide, x)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_an_autoencoder_has_no_prior_to_sample_or_score():
    ae = _ae()
    assert not ae.has_prior
    with pytest.raises(ConfigError, match="no prior"):
        ae.sample(4)
    with pytest.raises(ConfigError, match="need a prior"):
        evaluate(ae, _binary(10), k=2, metrics="logpx,elbo")
    result = evaluate(ae, _binary(10), k=2)  # the default metrics: the ELBO alone
    assert result.metrics == ["elbo"] and result.log_px is None
    assert result.kl is None and result.elbo_draws is None  # no KL term, no draws of z
    assert result.recon == pytest.approx(result.elbo)
    # Its table has the reconstruction alone: no draws of z, no KL.
    table = result.format_table()
    assert "reconstruction log p(x|z(x))" in table and "KL" not in table and "draws" not in table


@pytest.mark.parametrize(("kind", "name"), [("guide", "iaf"), ("prior", "vamp")])
def test_guides_and_priors_other_than_normal_are_refused(kind, name):
    config = model_config(kind="ae", data_shape=(1, 4, 4), latent_dim=2, **{kind: name})
    with pytest.raises(ConfigError, match=f"--{kind}"):
        check_model_config(config)


def test_training_lowers_the_reconstruction_error():
    images = torch.tensor(load_digits().images[:600], dtype=torch.float32).unsqueeze(1) / 16
    x = (images > 0.5).float()
    train, test = x[:500], x[500:]
    ae = _ae((1, 8, 8))

    def test_nll() -> float:
        with torch.no_grad():
            return float(-ae.px(ae.encode(test)).log_prob(test).mean())

    before = test_nll()
    step = TrainStep(ae, make_elbo("meanfield"), make_optimizer(ae.parameters(), 1e-2))
    for _epoch in range(5):
        for batch in train[torch.randperm(500)].split(100):
            step(batch)
    after = test_nll()
    assert after < before - 5.0, (before, after)
