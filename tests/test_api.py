from __future__ import annotations

import math
import os
import time

import pytest
import torch
from tqdm import tqdm

from pyrovae.api import (
    TEMPERATURE_RANGE,
    latest_run,
    load_run,
    read_metrics,
    reconstruct,
    sample,
    train,
)
from pyrovae.errors import CheckpointError, ConfigError
from pyrovae.training.checkpoint import load_checkpoint, save_checkpoint


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


@pytest.mark.parametrize("temperature", [0.0, -1.0, math.inf, -math.inf, math.nan, 1e-7, 101.0])
def test_bad_temperature_is_one_line(run_dir, temperature):
    run = load_run(run_dir, device="cpu")
    with pytest.raises(ConfigError, match="--temperature must be a number from 1e-06 to 100"):
        sample(run, 4, temperature=temperature)


def test_temperature_range_ends_give_finite_images(run_dir):
    run = load_run(run_dir, device="cpu")
    for temperature in TEMPERATURE_RANGE:
        images = sample(run, 4, temperature=temperature, seed=0)
        assert torch.isfinite(images).all() and images.min() >= 0 and images.max() <= 1


def test_bad_sample_arguments(run_dir):
    run = load_run(run_dir, device="cpu")
    with pytest.raises(ConfigError):
        sample(run, 0)
    with pytest.raises(ConfigError, match="split"):
        reconstruct(run, 2, split="validation")


def test_reconstruct_gives_what_the_split_holds(run_dir):
    run = load_run(run_dir, device="cpu")
    originals, recons = reconstruct(run, 1000)
    assert originals.shape == recons.shape == (360, 1, 8, 8)
    originals, _ = reconstruct(run, 100000, split="train")
    assert originals.shape[0] == 1437


def test_draws_in_batches_with_a_progress_bar(run_dir, monkeypatch):
    import pyrovae.api

    run = load_run(run_dir, device="cpu")
    monkeypatch.setattr(pyrovae.api, "BATCH_SIZE", 4)
    bars = []
    real = pyrovae.api._progress
    monkeypatch.setattr(pyrovae.api, "_progress", lambda *a: bars.append(a[1:]) or real(*a))
    assert sample(run, 10, progress=True).shape == (10, 1, 8, 8)
    originals, recons = reconstruct(run, 9, progress=False)
    assert originals.shape == recons.shape == (9, 1, 8, 8)
    assert bars == [(True, "sampling"), (False, "reconstructing")]
    assert list(real([4, 4, 2], False, "x")) == [4, 4, 2]
    assert isinstance(real([4, 4, 2], True, "x"), tqdm)


def test_non_finite_parameters_are_refused_at_load(run_dir):
    state = load_checkpoint(run_dir / "checkpoint.pt")
    state["model"]["decoder.net.1.bias"][0] = math.nan
    save_checkpoint(run_dir / "checkpoint.pt", state)
    with pytest.raises(CheckpointError, match=r"NaN or infinite parameters \(decoder"):
        load_run(run_dir)


def test_non_finite_images_are_refused(run_dir, monkeypatch):
    run = load_run(run_dir, device="cpu")
    monkeypatch.setattr(run.vae, "sample", lambda n, **_: torch.full((n, 1, 8, 8), math.inf))
    with pytest.raises(CheckpointError, match="non-finite"):
        sample(run, 3)
    with pytest.raises(ConfigError, match="temperature 0.5"):
        sample(run, 3, temperature=0.5)
