"""Tests of pyrovae/reports/probe.py: class-balanced subsets, the binomial standard
error, and the probe of a tiny digits run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import pyrovae
from pyrovae.errors import ConfigError, DataError
from pyrovae.model.spec import model_config
from pyrovae.model.vae import VAE
from pyrovae.reports.probe import balanced_subset, linear_probe, probe_features
from pyrovae.runtime import threads


def test_balanced_subsets_are_balanced_seeded_and_cope_with_a_small_class():
    labels = np.array([0] * 50 + [1] * 30 + [2] * 4)
    index = balanced_subset(labels, 30, seed=3)
    assert len(np.unique(index)) == 30
    assert np.bincount(labels[index]).tolist() == [13, 13, 4]  # class 2 gives all it has
    assert np.array_equal(index, balanced_subset(labels, 30, seed=3))
    assert not np.array_equal(index, balanced_subset(labels, 30, seed=4))
    assert np.bincount(labels[balanced_subset(labels, 9, seed=0)]).tolist() == [3, 3, 3]


def _blobs(n: int, shift: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    return rng.normal(size=(n, 3)) + shift * y[:, None], y


def test_the_probe_scores_each_feature_and_reports_its_binomial_error():
    train, train_y = _blobs(200, 10.0, 0)
    test, test_y = _blobs(101, 10.0, 1)
    noise, noise_test = np.random.default_rng(2).normal(size=(2, 301, 3))
    features = {"latent": train, "pixels": noise[:200], "pca": train[:, :1]}
    test_features = {"latent": test, "pixels": noise_test[:101], "pca": test[:, :1]}
    result = probe_features(features, train_y, test_features, test_y, counts=[20, 500, None])
    assert result.skipped == [500] and result.label_counts() == [20, 200]
    rows = {(r.features, r.n_labels): r for r in result.rows}
    assert rows["latent", 200].accuracy == 1.0 and rows["latent", 200].standard_error == 0.0
    chance = rows["pixels", 200]  # noise: near 1/2, with the binomial error of its rate
    assert chance.standard_error == pytest.approx(
        math.sqrt(chance.accuracy * (1 - chance.accuracy) / 101)
    )
    assert abs(chance.accuracy - 0.5) < 4 * 0.05
    table = result.format_table()
    assert "20 labels" in table and "all 200" in table and "skipped" in table
    json.dumps(result.to_dict())
    with pytest.raises(ConfigError, match="more than the 200 training labels: nothing to fit"):
        probe_features(features, train_y, test_features, test_y, counts=[500, 1000])


@pytest.mark.parametrize(
    ("counts", "message"),
    [([2.5], "a label count must be a whole number, got 2.5"), ([1], "must be at least 2, got 1"),
     ("100", "must be a list of whole numbers"), ([], "at least one count")],
)  # fmt: skip
def test_bad_label_counts_from_python_are_one_line(counts, message):
    train, train_y = _blobs(40, 10.0, 0)
    features = {"latent": train, "pixels": train, "pca": train}
    with pytest.raises(ConfigError, match=message):
        probe_features(features, train_y, features, train_y, counts=counts)


def test_label_counts_may_be_any_collection_of_whole_numbers():
    train, train_y = _blobs(40, 10.0, 0)
    features = {"latent": train, "pixels": train, "pca": train}
    for counts in (np.array([10, 20]), {10, 20}, (10, 20)):
        result = probe_features(features, train_y, features, train_y, counts=counts)
        assert result.label_counts() == [10, 20]


def test_fewer_labels_than_classes_are_warned_of():
    rng = np.random.default_rng(0)
    train, train_y = rng.normal(size=(60, 3)), np.arange(60) % 5
    features = {"latent": train, "pixels": train, "pca": train}
    with pytest.warns(UserWarning, match="with 3 labels the classifier sees 3 of the 5 classes"):
        probe_features(features, train_y, features, train_y, counts=[3, None])


def test_a_run_without_labels_is_a_one_line_error():
    vae = VAE(model_config(data_shape=(1, 4, 4), hidden=(8,), latent_dim=2))
    x = torch.rand(6, 1, 4, 4)
    with pytest.raises(DataError, match="needs class labels") as info:
        linear_probe(vae, (x, None), (x, None))
    assert "\n" not in str(info.value)


def test_unlabelled_points_are_neither_fitted_nor_scored():
    # -1 marks an unlabelled point: it was fitted and scored as a class of its own.
    vae = VAE(model_config(data_shape=(1, 4, 4), hidden=(8,), latent_dim=2))
    x = torch.rand(40, 1, 4, 4)
    y = torch.tensor([0, 1, -1, -1] * 10)
    result = linear_probe(vae, (x, y), (x, y), counts=[None])
    assert result.n_train == 20 and result.n_test == 20
    with pytest.raises(DataError, match="the test split has none"):
        linear_probe(vae, (x, y), (x, torch.full((40,), -1)))


def test_the_api_probes_a_digits_run(tiny_digits_run, tmp_path):
    run = pyrovae.load_run(tiny_digits_run, device="cpu")
    with threads(1):  # the classifier's BLAS follows torch's thread count
        result = pyrovae.probe(run, counts=[30, 100], out=tmp_path, json_path=tmp_path / "p.json")
    assert result.n_test == 360 and result.dims == {"latent": 2, "pixels": 64, "pca": 2}
    assert len(result.rows) == 6
    pixels = next(r for r in result.rows if r.features == "pixels" and r.n_labels == 100)
    assert pixels.accuracy > 0.4  # ten classes: chance is 0.1
    assert (tmp_path / "probe.png").stat().st_size > 0
    assert json.loads((tmp_path / "p.json").read_text())["n_train"] == 1437
