"""Corruption operators: the share of values hit is P within the binomial standard error."""

from __future__ import annotations

import math

import pytest
import torch

from pyrovae.errors import ConfigError
from pyrovae.model.corruption import (
    GaussianNoise,
    MaskNoise,
    SaltPepperNoise,
    parse_corruption,
)

#: Values per statistical check; tolerances are 4 standard errors (a false alarm
#: about once in 16,000 runs, and the seed is fixed anyway).
N = 200_000
Z = 4.0


def _binomial_tolerance(p: float, n: int = N) -> float:
    return Z * math.sqrt(p * (1 - p) / n)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_mask_sets_a_share_p_to_zero_and_leaves_the_rest(p):
    x = torch.rand(N) * 0.9 + 0.1  # no zeros of its own
    x_tilde = MaskNoise(p)(x)
    masked = x_tilde == 0
    assert abs(masked.double().mean().item() - p) < _binomial_tolerance(p)
    assert torch.equal(x_tilde[~masked], x[~masked])


def test_salt_pepper_hits_a_share_p_half_salt_half_pepper():
    p = 0.3
    x = torch.full((N,), 0.5)
    x_tilde = SaltPepperNoise(p)(x)
    hit = x_tilde != 0.5
    assert abs(hit.double().mean().item() - p) < _binomial_tolerance(p)
    n_hit = int(hit.sum())
    salt = (x_tilde[hit] == 1).double().mean().item()
    assert abs(salt - 0.5) < _binomial_tolerance(0.5, n_hit)
    assert set(x_tilde[hit].unique().tolist()) == {0.0, 1.0}


def test_salt_pepper_takes_the_datas_ends_where_they_leave_the_unit_interval():
    # Standardized data: 0 and 1 are ordinary values there, not salt and pepper.
    corrupt = parse_corruption("salt-pepper:0.5", value_range=(-2.5, 4.1))
    assert isinstance(corrupt, SaltPepperNoise) and corrupt.spec == "salt-pepper:0.5"
    x_tilde = corrupt(torch.zeros(10_000, dtype=torch.float64))
    assert set(x_tilde.unique().tolist()) == {-2.5, 0.0, 4.1}  # exactly, in float64
    assert x_tilde.dtype == torch.float64
    assert parse_corruption("mask:0.5", value_range=(-2.5, 4.0)) == MaskNoise(0.5)


def test_gaussian_noise_has_mean_zero_and_the_given_spread():
    sigma = 0.3
    x = torch.rand(N)
    noise = GaussianNoise(sigma)(x) - x
    assert abs(noise.mean().item()) < Z * sigma / math.sqrt(N)
    # The standard error of a sample standard deviation is about sigma / sqrt(2 N).
    assert abs(noise.std().item() - sigma) < Z * sigma / math.sqrt(2 * N)


def test_each_call_draws_a_fresh_corruption():
    corrupt = parse_corruption("mask:0.5")
    assert corrupt is not None
    x = torch.ones(1000)
    assert not torch.equal(corrupt(x), corrupt(x))


def test_parse_reads_the_spec_and_records_it():
    corrupt = parse_corruption("salt-pepper:0.25")
    assert isinstance(corrupt, SaltPepperNoise) and corrupt.value == 0.25
    assert corrupt.spec == "salt-pepper:0.25"
    assert parse_corruption(None) is None


@pytest.mark.parametrize(
    "spec", ["mask:2", "mask:-0.1", "blur:1", "gaussian:-1", "gaussian:0", "mask", "mask:x",
             "salt-pepper:0", "gaussian:inf"],
)  # fmt: skip
def test_bad_specs_are_one_line_errors(spec):
    with pytest.raises(ConfigError, match="--corrupt") as info:
        parse_corruption(spec)
    assert "\n" not in str(info.value)
