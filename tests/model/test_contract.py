"""Components that break their contract's shapes are named before training, in one line."""

from __future__ import annotations

import dataclasses

import pyro.distributions as dist
import pytest
import torch
from torch import nn

import pyrovae
from pyrovae.errors import ConfigError
from pyrovae.model.build import make_model
from pyrovae.model.contract import check_contract
from pyrovae.model.likelihoods import LIKELIHOODS, Likelihood
from pyrovae.model.networks.base import NETWORKS, Networks
from pyrovae.model.networks.mlp import MLPNetwork
from pyrovae.model.priors.base import PRIORS, Prior
from pyrovae.model.spec import model_config


class _NoEventLikelihood(Likelihood):
    """Bernoulli pixels, each its own batch element (no ``.to_event``)."""

    name = "test-no-event"

    def forward(self, decoded):
        return dist.Bernoulli(logits=decoded)


class _FailingLikelihood(Likelihood):
    """A Normal with a negative scale, which Pyro's validation refuses."""

    name = "test-failing"

    def forward(self, decoded):
        return dist.Normal(decoded, -torch.ones_like(decoded)).to_event(self.event_dims)


class _SmallPrior(Prior):
    """N(0, I) over three units, whatever the latent size."""

    name = "test-small"

    def forward(self):
        return dist.Normal(torch.zeros(3), 1.0).to_event(1)


class _BatchPrior(Prior):
    """N(0, I) with the units as a batch (no ``.to_event``)."""

    name = "test-batch"

    def forward(self):
        return dist.Normal(torch.zeros(self.n_latent), 1.0)


class _FlatDecoderNetwork(MLPNetwork):
    """The MLP, its decoder's output left flat ``(batch, C*H*W)``."""

    name = "test-flat-decoder"

    def build(self, context):
        encoder, decoder = super().build(context)
        return Networks(encoder, nn.Sequential(decoder, nn.Flatten()))


class _ProportionsNetwork(MLPNetwork):
    """The MLP on each point's values as proportions: undefined at an all-zero point."""

    name = "test-proportions"

    def build(self, context):
        encoder, decoder = super().build(context)

        class Proportions(nn.Module):
            out_features = encoder.out_features

            def __init__(self):
                super().__init__()
                self.inner = encoder

            def forward(self, x):
                total = x.flatten(1).sum(1)
                if bool((total == 0).any()):
                    raise ValueError("a point with no mass")
                return self.inner(x / total.reshape(-1, *[1] * (x.dim() - 1)))

        return Networks(Proportions(), decoder)


BROKEN = [(LIKELIHOODS, _NoEventLikelihood), (LIKELIHOODS, _FailingLikelihood),
          (PRIORS, _SmallPrior), (PRIORS, _BatchPrior), (NETWORKS, _FlatDecoderNetwork),
          (NETWORKS, _ProportionsNetwork)]  # fmt: skip


@pytest.fixture
def broken():
    for registry, cls in BROKEN:
        registry.register(cls)
    yield
    for registry, cls in BROKEN:
        registry.unregister(cls.name)


def _vae(**fields):
    return make_model(model_config(data_shape=(1, 8, 8), latent_dim=4, hidden=16, **fields))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"likelihood": "test-no-event"},
         r"likelihood 'test-no-event' returns a distribution of batch shape \(2, 1, 8, 8\) and "
         r"event shape \(\); its contract is batch \(2,\) and event \(1, 8, 8\); make the last "
         r"3 dimensions the event with .to_event\(3\)"),
        ({"likelihood": "test-failing"},
         r"likelihood 'test-failing' failed on a probe batch of two data points before "
         r"training: ValueError: "),
        ({"prior": "test-small"},
         r"prior 'test-small' returns a distribution of batch shape \(\) and event shape "
         r"\(3,\); its contract is batch \(\) and event \(4,\)$"),
        ({"prior": "test-batch"}, r"make the last dimension the event with .to_event\(1\)"),
        ({"network": "test-flat-decoder"},
         r"network 'test-flat-decoder' \(its decoder\) returns shape \(2, 64\) for two data "
         r"points; its contract is \(2, 1, 8, 8\)"),
        ({"network": "test-proportions"},
         r"network 'test-proportions' \(its encoder\) failed .*: ValueError: a point with no"),
    ],
)  # fmt: skip
def test_a_component_that_breaks_its_contract_is_named(broken, fields, message):
    with pytest.raises(ConfigError, match=message):
        check_contract(_vae(**fields))


#: Every model kind with every prior it takes (an autoencoder has none to choose; the
#: conditional kinds take no VampPrior nor two-level prior).
KIND_PRIORS = [("ae", "normal")] + [
    (kind, prior)
    for kind in ("vae", "cvae", "m2")
    for prior in ("normal", "flow", "mog", "vamp", "hierarchical")
    if kind == "vae" or prior not in ("vamp", "hierarchical")
]


@pytest.mark.parametrize(("kind", "prior"), KIND_PRIORS)
def test_every_model_kind_and_prior_keeps_the_contract(kind, prior):
    guide = "ladder" if prior == "hierarchical" else "normal"
    labels = {"n_classes": 3} if kind in ("cvae", "m2") else {}
    config = model_config(data_shape=(1, 8, 8), latent_dim=4, hidden=16, prior=prior, guide=guide)
    vae = make_model(dataclasses.replace(config, kind=kind, **labels))
    vae.train()
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    check_contract(vae)
    assert vae.training  # left in the mode it was in
    assert all(torch.equal(before[k], v) for k, v in vae.state_dict().items())


def test_the_probe_takes_real_points_which_a_network_may_need(broken):
    vae = _vae(network="test-proportions")
    with pytest.raises(ConfigError, match="a point with no mass"):
        check_contract(vae)  # zeros
    check_contract(vae, torch.rand(5, 1, 8, 8) + 0.1)
    check_contract(vae, torch.rand(1, 1, 8, 8) + 0.1)  # one point is probed twice


def test_training_with_a_broken_component_stops_before_the_run_folder_is_written(broken, tmp_path):
    with pytest.raises(ConfigError, match="prior 'test-small' returns a distribution"):
        pyrovae.train(prior="test-small", epochs=1, hidden=16, latent_dim=4, out=tmp_path / "run")
    assert not (tmp_path / "run" / "config.json").exists()
