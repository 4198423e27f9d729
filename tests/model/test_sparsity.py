"""The sparsity penalty: the closed-form Bernoulli KL, on the squashed activations."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from pyrovae.errors import ConfigError
from pyrovae.model.sparsity import SparsityPenalty, bernoulli_kl, recorded_outputs, squash


def _kl(rho: float, rho_hat: float) -> float:
    return rho * math.log(rho / rho_hat) + (1 - rho) * math.log((1 - rho) / (1 - rho_hat))


def test_bernoulli_kl_is_the_closed_form_summed_over_units():
    got = bernoulli_kl(0.1, torch.tensor([0.2, 0.5, 0.1]))
    assert got.item() == pytest.approx(_kl(0.1, 0.2) + _kl(0.1, 0.5) + 0.0, rel=1e-6)


def test_penalty_on_a_hand_example():
    # Two data points, two units; tanh(atanh(a)) = a, so the squashed activations
    # are [[0.2, 0.6], [0.4, 0.0]] (a negative feature counts as inactive).
    h = torch.tensor([[math.atanh(0.2), math.atanh(0.6)], [math.atanh(0.4), -3.0]])
    rho_hat = (0.3, 0.3)  # the columns' means
    expected = _kl(0.05, rho_hat[0]) + _kl(0.05, rho_hat[1])
    assert SparsityPenalty(0.05, 3.0).kl(h).item() == pytest.approx(expected, rel=1e-5)


def test_the_penalty_is_zero_at_the_target_and_pushes_activations_towards_it():
    rho = 0.2
    h = torch.full((4, 3), math.atanh(rho), requires_grad=True)
    kl = SparsityPenalty(rho).kl(h)
    assert kl.item() == pytest.approx(0.0, abs=1e-6)
    above = torch.full((4, 3), math.atanh(0.5), requires_grad=True)
    SparsityPenalty(rho).kl(above).backward()
    assert above.grad is not None and (above.grad > 0).all()  # descent lowers them


def test_squash_maps_features_into_the_unit_interval():
    h = torch.tensor([-5.0, 0.0, 0.5, 100.0])
    s = squash(h)
    assert s[0] == 0 and s[1] == 0 and 0 < s[2] < 1 and s[3] <= 1


@pytest.mark.parametrize(("rho", "weight"), [(0.0, 1.0), (1.0, 1.0), (0.05, 0.0), (0.05, -1)])
def test_bad_settings_are_config_errors(rho, weight):
    with pytest.raises(ConfigError, match="--sparsity"):
        SparsityPenalty(rho, weight)


def test_recorded_outputs_keeps_each_call_and_then_lets_go():
    layer = nn.Linear(2, 3)
    with recorded_outputs(layer) as outputs:
        first = layer(torch.zeros(1, 2))
        layer(torch.ones(4, 2))
    layer(torch.ones(5, 2))
    assert [o.shape[0] for o in outputs] == [1, 4] and outputs[0] is first
