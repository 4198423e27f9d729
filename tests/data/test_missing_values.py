"""NaN as a missing value: read from files and Python data, checked, binarized."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pyrovae
from pyrovae.data.load import load_dataset
from pyrovae.data.missing import (
    bernoulli_observed,
    check_observed_rows,
    draw_binary_batch,
    draw_binary_observed,
    has_missing,
)
from pyrovae.errors import DataError


def test_nan_in_an_npy_file_reads_as_missing(tmp_path):
    array = np.random.default_rng(0).random((20, 8, 8)).astype(np.float32)
    array[2, 3, 4] = np.nan
    np.save(tmp_path / "x.npy", array)
    data = load_dataset(tmp_path / "x.npy", test_fraction=0.0)
    assert has_missing(data.train) and int(torch.isnan(data.train).sum()) == 1


def test_a_validation_split_of_incomplete_intensities_keeps_them_missing():
    """Binarizing the held-out points (binary likelihood) drew Bernoulli(NaN), a
    RuntimeError, whenever a point with a missing value was held out."""
    from pyrovae.data.dataset import ArrayData
    from pyrovae.data.validation import hold_out_validation

    train = torch.rand(20, 1, 2, 2)
    train[:, 0, 0, 0] = torch.nan  # every point misses one value
    data = ArrayData("rows", train, train[:4].clone())
    held = hold_out_validation(data, 0.25, seed=0, binary=True)
    validation = held.validation
    assert torch.isnan(validation[:, 0, 0, 0]).all()
    observed = validation[~torch.isnan(validation)]
    assert set(observed.unique().tolist()) <= {0.0, 1.0}


def test_a_point_with_no_observed_value_is_a_one_line_error():
    x = torch.rand(5, 1, 2, 2)
    x[3] = torch.nan
    with pytest.raises(DataError, match=r"1 point\(s\) with every value missing .* index 3"):
        check_observed_rows(x, "the data")
    x[3, 0, 0, 0] = 0.5
    check_observed_rows(x, "the data")


def test_training_on_a_point_with_every_value_missing_fails_before_a_run_exists(tmp_path):
    x = torch.rand(20, 1, 8, 8)
    x[7] = torch.nan
    with pytest.raises(DataError, match="every value missing") as info:
        pyrovae.train(data=x, out=tmp_path / "run", epochs=1, progress=False, log=lambda _: None)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "run").exists()


def test_binarizing_keeps_missing_values_missing_and_draws_as_before():
    x = torch.rand(4, 1, 3, 3)
    complete = bernoulli_observed(x, torch.Generator().manual_seed(0))
    assert torch.equal(complete, torch.bernoulli(x, generator=torch.Generator().manual_seed(0)))
    x[0, 0, 1, 1] = torch.nan
    draws = bernoulli_observed(x)
    assert torch.isnan(draws[0, 0, 1, 1]) and int(torch.isnan(draws).sum()) == 1


def test_training_draws_keep_missing_values_missing_and_draw_the_rest():
    x = torch.rand(200, 1, 3, 3, dtype=torch.float64)
    x[:, 0, 1, 1] = torch.nan
    x[:, 0, 0, 0], x[:, 0, 2, 2] = 0.0, 1.0
    draws = draw_binary_observed(x, torch.Generator().manual_seed(0))
    assert draws.dtype == x.dtype
    assert torch.isnan(draws[:, 0, 1, 1]).all() and int(torch.isnan(draws).sum()) == 200
    assert (draws[:, 0, 0, 0] == 0).all() and (draws[:, 0, 2, 2] == 1).all()
    others = draws[~torch.isnan(draws)]
    assert set(others.unique().tolist()) == {0.0, 1.0}


def test_a_training_batch_keeps_missing_values_only_when_the_model_was_built_for_them():
    x = torch.full((50, 4), 0.5)
    x[:, 0] = torch.nan
    kept = draw_binary_batch(x, missing=True)
    assert torch.isnan(kept[:, 0]).all() and not torch.isnan(kept[:, 1:]).any()
    # Without the flag no batch is scanned for NaN: draw_binary draws 0.0 for it.
    drawn = draw_binary_batch(x, missing=False)
    assert (drawn[:, 0] == 0).all() and set(drawn[:, 1:].unique().tolist()) == {0.0, 1.0}


def test_values_out_of_range_are_reported_beside_missing_ones():
    from pyrovae.data.pixels import check_finite_unit_interval

    x = torch.rand(3, 4)
    x[0, 0], x[1, 1] = torch.nan, 2.0
    with pytest.raises(DataError, match=r"1 values outside \[0, 1\] \(min 0.*, max 2,"):
        check_finite_unit_interval(x, "the data", missing=True)
