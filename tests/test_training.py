from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from pyrovae.api import load_run
from pyrovae.checkpoint import CHECKPOINT_NAME, load_checkpoint
from pyrovae.config import RunConfig
from pyrovae.errors import ConfigError, DataError
from pyrovae.model import VAE
from pyrovae.training import evaluate_elbo, kl_weight, prepare_data, resume, train


def _quiet(_: str) -> None:
    pass


def test_training_improves_test_elbo_clearly(tiny_config, tmp_path):
    tiny_config.train.epochs = 5
    data = prepare_data(tiny_config, torch.device("cpu"))
    tiny_config.model.image_shape = data.image_shape
    torch.manual_seed(tiny_config.train.seed)
    untrained = evaluate_elbo(VAE(tiny_config.model), data.test)["elbo"]
    result = train(tiny_config, tmp_path / "run", progress=False, log=_quiet)
    trained = result.final["test_elbo"]
    assert trained > untrained + 5.0, (untrained, trained)


def test_run_directory_contents(tiny_config, tmp_path):
    result = train(tiny_config, tmp_path / "run", progress=False, log=_quiet)
    run_dir = result.run_dir
    expected = {"config.json", "metrics.jsonl", CHECKPOINT_NAME, "samples.png",
                "reconstructions.png", "loss_curve.png"}  # fmt: skip
    assert expected <= {p.name for p in run_dir.iterdir()}
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2]
    for key in ("train_elbo", "test_elbo", "test_recon", "test_kl", "images_per_s"):
        assert all(math.isfinite(row[key]) for row in rows)
    row = rows[-1]
    assert row["test_elbo"] == pytest.approx(row["test_recon"] - row["test_kl"])
    saved = RunConfig.load(run_dir / "config.json")
    assert saved.model.image_shape == (1, 8, 8)
    assert load_checkpoint(run_dir / CHECKPOINT_NAME)["epoch"] == 2


def test_same_seed_same_numbers(tiny_config, tmp_path):
    first = train(tiny_config, tmp_path / "a", progress=False, log=_quiet)
    second = train(tiny_config, tmp_path / "b", progress=False, log=_quiet)
    assert first.final["test_elbo"] == second.final["test_elbo"]
    for key, value in first.vae.state_dict().items():
        assert torch.equal(value, second.vae.state_dict()[key])


def test_stop_and_resume_equals_uninterrupted_run(tiny_config, tmp_path):
    tiny_config.train.epochs = 3
    tiny_config.train.kl_warmup = 2  # the schedule must survive the restart too
    straight = train(tiny_config, tmp_path / "straight", progress=False, log=_quiet)

    tiny_config.train.epochs = 1
    train(tiny_config, tmp_path / "stopped", progress=False, log=_quiet)
    resumed = resume(tmp_path / "stopped", epochs=3, progress=False, log=_quiet)

    assert [row["epoch"] for row in resumed.history] == [1, 2, 3]
    for key, value in straight.vae.state_dict().items():
        assert torch.equal(value, resumed.vae.state_dict()[key]), key
    assert straight.history[-1]["test_elbo"] == resumed.history[-1]["test_elbo"]
    reloaded = load_run(tmp_path / "stopped", device="cpu")
    for key, value in reloaded.vae.state_dict().items():
        assert torch.equal(value, straight.vae.state_dict()[key]), key


def test_a_run_stopped_before_its_first_checkpoint_resumes_from_the_start(tiny_config, tmp_path):
    tiny_config.train.epochs = 1
    straight = train(tiny_config, tmp_path / "straight", progress=False, log=_quiet)
    stopped = tmp_path / "stopped"  # what Ctrl-C in epoch 1 leaves: the config alone
    stopped.mkdir()
    straight.config.save(stopped / "config.json")
    resumed = resume(stopped, progress=False, log=_quiet)
    assert [row["epoch"] for row in resumed.history] == [1]
    for key, value in straight.vae.state_dict().items():
        assert torch.equal(value, resumed.vae.state_dict()[key]), key


def test_existing_run_is_not_overwritten(tiny_config, tmp_path):
    train(tiny_config, tmp_path / "run", progress=False, log=_quiet)
    before = (tmp_path / "run" / CHECKPOINT_NAME).read_bytes()
    with pytest.raises(ConfigError, match="--resume"):
        train(tiny_config, tmp_path / "run", progress=False, log=_quiet)
    assert (tmp_path / "run" / CHECKPOINT_NAME).read_bytes() == before


@pytest.mark.parametrize(
    "array, message",
    [
        (np.full((20, 8, 8), np.nan, dtype=np.float32), "NaN"),
        (np.full((20, 8, 8), 3.0, dtype=np.float32), "outside"),
    ],
)
def test_bad_data_fails_before_a_run_directory_exists(tiny_config, tmp_path, array, message):
    np.save(tmp_path / "bad.npy", array)
    tiny_config.data.dataset = str(tmp_path / "bad.npy")
    with pytest.raises(DataError, match=message):
        train(tiny_config, tmp_path / "run", progress=False, log=_quiet)
    assert not (tmp_path / "run").exists()


def test_bernoulli_without_binarization_needs_binary_pixels(tiny_config, tmp_path):
    tiny_config.data.binarize = "none"
    with pytest.raises(DataError, match="--binarize"):
        train(tiny_config, tmp_path / "run", progress=False, log=_quiet)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("likelihood", ["continuous-bernoulli", "gaussian"])
def test_intensity_likelihoods_train(tiny_config, tmp_path, likelihood):
    tiny_config.model.likelihood = likelihood
    tiny_config.train.epochs = 1
    result = train(tiny_config, tmp_path / "run", progress=False, log=_quiet)
    assert math.isfinite(result.final["test_elbo"])


def test_conv_architecture_trains_on_small_images(tiny_config, tmp_path):
    tiny_config.model.arch = "conv"
    tiny_config.train.epochs = 1
    result = train(tiny_config, tmp_path / "run", progress=False, log=_quiet)
    assert math.isfinite(result.final["test_elbo"])


def test_kl_warmup_schedule(tiny_config):
    tiny_config.train.kl_warmup = 2
    tiny_config.train.beta = 0.5
    betas = [kl_weight(tiny_config, step, steps_per_epoch=10) for step in range(30)]
    assert 0 < betas[0] < 0.05
    assert betas[19] == pytest.approx(0.5) and betas[29] == 0.5
    assert all(a <= b for a, b in zip(betas, betas[1:], strict=False))
    tiny_config.train.kl_warmup = 0
    assert kl_weight(tiny_config, 0, 10) == 0.5


def test_cuda_requested_without_cuda(tiny_config, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    tiny_config.train.device = "cuda"
    with pytest.raises(ConfigError, match="CUDA"):
        train(tiny_config, tmp_path / "run", progress=False, log=_quiet)


@pytest.mark.parametrize("binarize", ["dynamic", "static"])
def test_uint8_images_are_binarized_in_their_own_dtype(tiny_config, tmp_path, binarize):
    images = np.random.default_rng(0).integers(0, 256, size=(40, 1, 8, 8), dtype=np.uint8)
    np.save(tmp_path / "images.npy", images)
    tiny_config.data.dataset = str(tmp_path / "images.npy")
    tiny_config.data.binarize = binarize
    data = prepare_data(tiny_config, torch.device("cpu"))
    assert data.train.dtype == data.test.dtype == torch.uint8
    assert set(data.test.unique().tolist()) <= {0, 255}
    if binarize == "static":
        assert set(data.train.unique().tolist()) <= {0, 255}
    tiny_config.train.epochs = 1
    result = train(tiny_config, tmp_path / "run", progress=False, log=_quiet)
    assert math.isfinite(result.final["test_elbo"])


def test_pyro_step_gives_the_same_run(tiny_config, tmp_path):
    """The direct ELBO evaluation and Pyro's traced estimator train identically."""
    fast = train(tiny_config, tmp_path / "fast", progress=False, log=_quiet)
    tiny_config.train.pyro_step = True
    traced = train(tiny_config, tmp_path / "traced", progress=False, log=_quiet)
    for key, value in fast.vae.state_dict().items():
        torch.testing.assert_close(value, traced.vae.state_dict()[key], rtol=1e-4, atol=1e-5)
    assert fast.final["test_elbo"] == pytest.approx(traced.final["test_elbo"], abs=1e-3)


def test_a_cpu_run_leaves_cuda_alone(monkeypatch):
    """On a machine with GPUs, a CPU run neither starts CUDA for its RNG state nor
    checkpoints it; a checkpoint that has it (a GPU run) resumes on the CPU."""
    from pyrovae.training import _rng_state, _set_rng_state

    def untouchable(*args, **kwargs):
        raise AssertionError("a CPU run touched CUDA")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for name in ("get_rng_state", "get_rng_state_all", "set_rng_state", "set_rng_state_all"):
        monkeypatch.setattr(torch.cuda, name, untouchable)
    cpu, generator = torch.device("cpu"), torch.Generator()
    state = _rng_state(generator, cpu)
    assert set(state) == {"torch", "data"}
    _set_rng_state({**state, "cuda": torch.zeros(16, dtype=torch.uint8)}, generator, cpu)


def test_each_machines_first_process_loads_the_data_before_the_others(tiny_config, monkeypatch):
    """So that a data set the first one downloads is on disk before the others look for it."""
    from pyrovae import training
    from pyrovae.distributed import Context

    events: list[str] = []

    class Recorder(Context):
        def barrier(self) -> None:
            events.append("barrier")

    def load(config, device):
        events.append("load")
        return prepare_data(config, device)

    def stop(config):
        raise DataError("stop here")

    monkeypatch.setattr(training, "prepare_data", load)
    monkeypatch.setattr(training, "VAE", stop)
    for local_rank, expected in ((0, ["load", "barrier"]), (1, ["barrier", "load"])):
        events.clear()
        context = Recorder(rank=local_rank, world_size=2, local_rank=local_rank)
        with pytest.raises(DataError, match="stop here"):
            training._fit(tiny_config, Path("unused"), checkpoint=None, progress=False,
                          log=_quiet, context=context)  # fmt: skip
        assert events == expected, local_rank


def test_resume_of_a_finished_run_asks_for_more_epochs(tiny_config, tmp_path):
    train(tiny_config, tmp_path / "run", progress=False, log=_quiet)
    config_before = (tmp_path / "run" / "config.json").read_text()
    for epochs in (None, 1, 2):
        with pytest.raises(ConfigError, match="--epochs N with N > 2"):
            resume(tmp_path / "run", epochs=epochs, progress=False, log=_quiet)
    assert (tmp_path / "run" / "config.json").read_text() == config_before
