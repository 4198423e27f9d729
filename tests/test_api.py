from __future__ import annotations

import os
import time

import pytest
import torch

from pyrovae.api import latest_run, load_run, read_metrics, reconstruct, sample
from pyrovae.errors import CheckpointError, ConfigError
from pyrovae.training import train


@pytest.fixture
def run_dir(tiny_config, tmp_path):
    return train(tiny_config, tmp_path / "runs" / "a", progress=False, log=lambda _: None).run_dir


def test_load_sample_reconstruct(run_dir):
    run = load_run(run_dir, device="cpu")
    assert run.config.model.image_shape == (1, 8, 8)
    assert len(run.history) == 2 == len(read_metrics(run_dir))
    images = sample(run, 10, seed=3)
    assert images.shape == (10, 1, 8, 8) and images.min() >= 0 and images.max() <= 1
    state = torch.get_rng_state()
    assert torch.equal(images, sample(run, 10, seed=3))
    assert torch.equal(state, torch.get_rng_state())  # the caller's RNG is left alone
    cooler = sample(run, 10, seed=3, temperature=0.1)
    assert not torch.equal(images, cooler)
    originals, recons = reconstruct(run, 5)
    assert originals.shape == recons.shape == (5, 1, 8, 8)


def test_latest_run_picks_newest_checkpoint(run_dir, tiny_config):
    tiny_config.train.epochs = 1
    newer = train(tiny_config, run_dir.parent / "b", progress=False, log=lambda _: None).run_dir
    now = time.time()
    os.utime(run_dir / "checkpoint.pt", (now - 100, now - 100))
    assert latest_run(run_dir.parent) == newer


def test_no_runs(tmp_path):
    with pytest.raises(CheckpointError, match="pyrovae train"):
        latest_run(tmp_path)


def test_bad_sample_arguments(run_dir):
    run = load_run(run_dir, device="cpu")
    with pytest.raises(ConfigError):
        sample(run, 0)
    with pytest.raises(ConfigError):
        sample(run, 4, temperature=0.0)


def test_checkpoint_that_does_not_match_config(run_dir):
    text = (run_dir / "config.json").read_text().replace('"latent_dim": 4', '"latent_dim": 5')
    (run_dir / "config.json").write_text(text)
    with pytest.raises(CheckpointError, match="does not match"):
        load_run(run_dir)
