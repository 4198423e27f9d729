"""Dynamic binarization (:func:`pyrovae.data.pixels.draw_binary`) draws Bernoulli(x):
0.0 or 1.0 in x's dtype and shape, each pixel on with probability x."""

from __future__ import annotations

import pytest
import torch

from pyrovae.data.pixels import draw_binary


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_draws_are_zeros_and_ones_of_the_input_dtype_and_shape(dtype):
    x = torch.rand(3, 1, 5, 7, dtype=dtype)
    draws = draw_binary(x)
    assert draws.shape == x.shape and draws.dtype == dtype
    assert set(draws.unique().tolist()) <= {0.0, 1.0}


def test_certain_pixels_are_certain():
    x = torch.tensor([0.0, 1.0]).repeat(10_000)
    assert torch.equal(draw_binary(x), x)


def test_each_pixel_is_on_with_probability_its_intensity():
    # 20,000 draws per intensity: the mean is within 5 standard errors of p.
    p = torch.tensor([0.01, 0.2, 0.5, 0.73, 0.99])
    draws = draw_binary(p.expand(20_000, -1).contiguous(), torch.Generator().manual_seed(0))
    se = (p * (1 - p) / 20_000).sqrt()
    assert ((draws.mean(0) - p).abs() < 5 * se).all()


def test_a_generator_makes_the_draws_reproducible():
    x = torch.rand(4, 28, 28)
    first = draw_binary(x, torch.Generator().manual_seed(3))
    assert torch.equal(first, draw_binary(x, torch.Generator().manual_seed(3)))
    assert not torch.equal(first, draw_binary(x, torch.Generator().manual_seed(4)))
