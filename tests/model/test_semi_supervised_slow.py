"""Statistical: M2 beats logistic regression trained on its labelled subset (digits, 50 labels)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import pyrovae
from pyrovae.data.labels import keep_balanced
from pyrovae.data.load import load_dataset
from pyrovae.data.pixels import to_unit_float

N_LABELS = 50


@pytest.mark.slow
def test_m2_beats_logistic_regression_on_its_labelled_subset(tmp_path):
    from sklearn.linear_model import LogisticRegression

    result = pyrovae.train(
        kind="m2", labeled=N_LABELS, aux_weight=200.0, hidden=(256,), latent_dim=8,
        epochs=30, batch_size=64, out=tmp_path / "m2", progress=False, device="cpu",
        log=lambda line: None,
    )  # fmt: skip
    data = load_dataset("digits", seed=0, test_fraction=0.1)
    assert data.test_labels is not None and data.train_labels is not None
    kept = keep_balanced(data.train_labels, N_LABELS, seed=0)
    known = kept >= 0
    features = to_unit_float(data.train[known]).flatten(1).numpy()
    baseline = LogisticRegression(max_iter=5000).fit(features, kept[known].numpy())
    test_x, test_y = to_unit_float(data.test), data.test_labels.numpy()
    lr = float((baseline.predict(test_x.flatten(1).numpy()) == test_y).mean())
    run = pyrovae.load_run(result.run_dir, device="cpu")
    m2 = float((pyrovae.classify(run, test_x).numpy() == test_y).mean())
    n = test_y.size
    stderr = math.sqrt(m2 * (1 - m2) / n + lr * (1 - lr) / n)
    # A paired difference would be tighter; the unpaired standard error is the conservative one.
    assert m2 - lr > 0, f"M2 {m2:.3f} vs logistic regression {lr:.3f} (± {stderr:.3f})"
    assert np.isfinite(result.final["test_elbo"])
    assert torch.isfinite(torch.tensor(result.final["test_accuracy"]))
