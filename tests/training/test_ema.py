"""The moving average of the weights (:mod:`pyrovae.training.ema`): the closed-form
average after a few steps, evaluation and checkpoints on the averaged weights, a
resumed run that continues exactly as an uninterrupted one, and ``load_run``'s choice
between the average and the trained weights."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from pyrovae.config import DataConfig, RunConfig, TrainConfig
from pyrovae.training.ema import WeightAverage


def test_the_average_is_the_closed_form_one_and_swaps_in_and_out():
    layer = nn.Linear(2, 1)
    ema = WeightAverage(layer, 0.2)
    thetas = [torch.full((1, 2), float(t)) for t in (1, 4, -2, 3)]
    for theta in thetas:
        layer.weight.data.copy_(theta)
        ema.update(layer)
    # θ̄_1 = θ_1, θ̄_t = d_t θ̄_{t-1} + (1 - d_t) θ_t with d_t = min(0.2, t / (t + 9)):
    # d_2 = 2/11 (warm-up), then d_3 = d_4 = 0.2 (3/12 and 4/13 are above the decay).
    d2 = 2 / 11
    second = d2 * thetas[0] + (1 - d2) * thetas[1]
    expected = 0.2 * (0.2 * second + 0.8 * thetas[2]) + 0.8 * thetas[3]
    torch.testing.assert_close(ema.average["weight"], expected)
    assert ema.updates == 4
    own = layer.weight.detach().clone()
    with ema.swapped(layer):
        torch.testing.assert_close(layer.weight.detach(), expected)
    assert torch.equal(layer.weight.detach(), own)
    assert torch.equal(ema.state_dict(layer)["weight"], ema.average["weight"])


def test_the_decay_warms_up_as_tensorflow_s_and_then_holds():
    ema = WeightAverage(nn.Linear(2, 1), 0.999)
    assert ema.decay_at(1) == 0.0  # the first update copies the weights
    # TensorFlow's min(d, (1 + n) / (10 + n)) with n = t - 1 updates before this one
    assert [ema.decay_at(t) for t in (2, 11, 91)] == [2 / 11, 0.55, 0.91]
    assert ema.decay_at(8990) < 0.999 and ema.decay_at(8991) == ema.decay_at(10**6) == 0.999


def test_the_step_averages_after_every_update(make_vae):
    from pyrovae.inference.objectives import make_objective
    from pyrovae.training.step import TrainStep, make_optimizer

    vae = make_vae()
    step = TrainStep(vae, make_objective(TrainConfig()), make_optimizer(vae.parameters(), 1e-2))
    step.ema = WeightAverage(vae, 0.2)
    x = torch.rand(8, 1, 4, 4).bernoulli()
    seen = []
    for _ in range(3):
        step(x)
        seen.append({k: v.clone() for k, v in vae.state_dict().items()})
    name = next(k for k, v in seen[0].items() if v.is_floating_point())
    d2 = 2 / 11  # the warm-up's d_2; d_3 = min(0.2, 3/12) = 0.2
    expected = 0.2 * (d2 * seen[0][name] + (1 - d2) * seen[1][name]) + 0.8 * seen[2][name]
    torch.testing.assert_close(step.ema.average[name], expected)


def _config(**train):
    from pyrovae.model.spec import model_config

    return RunConfig(
        data=DataConfig(dataset="digits"),
        model=model_config(hidden=(16,), latent_dim=2),
        train=TrainConfig(batch_size=256, device="cpu", eval_size=60, ema=0.9, **train),
    )


def _train(config, out):
    from pyrovae.training.run import train

    return train(config, out, progress=False, log=lambda line: None)


def test_evaluation_and_checkpoint_use_the_average_and_a_resume_continues_exactly(tmp_path):
    from pyrovae.api import load_run
    from pyrovae.training.checkpoint import load_checkpoint
    from pyrovae.training.run import resume

    config = _config(epochs=2)
    whole = _train(config, tmp_path / "whole")
    state = load_checkpoint(tmp_path / "whole" / "checkpoint.pt")
    assert state["ema_updates"] == 2 * 6  # an update per step: 6 batches of 256 an epoch
    trained, averaged = state["train_model"], state["model"]
    assert any(not torch.equal(trained[k], averaged[k]) for k in trained)
    loaded = load_run(tmp_path / "whole", device="cpu").vae.state_dict()
    assert all(torch.equal(loaded[k], averaged[k]) for k in averaged)
    assert all(torch.equal(whole.vae.state_dict()[k], averaged[k]) for k in averaged)

    stopped = _train(dataclasses.replace(config, train=dataclasses.replace(
        config.train, max_time=1e-3)), tmp_path / "stopped")  # fmt: skip
    assert len(stopped.history) == 1
    resumed = resume(tmp_path / "stopped", max_time=0, progress=False, log=lambda line: None)
    assert [r["test_elbo"] for r in resumed.history] == [r["test_elbo"] for r in whole.history]
    again = load_checkpoint(tmp_path / "stopped" / "checkpoint.pt")
    assert again["ema_updates"] == state["ema_updates"]
    for key in ("model", "train_model"):
        for name, value in state[key].items():
            assert torch.equal(again[key][name], value), (key, name)


def test_the_trained_weights_load_on_request_from_the_last_and_the_best_checkpoint(
    tmp_path, caplog
):
    """``--weights trained`` scores the same training without its average."""
    from pyrovae.api import load_run
    from pyrovae.errors import CheckpointError, ConfigError
    from pyrovae.training.checkpoint import load_checkpoint, save_checkpoint

    config = _config(epochs=2)
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, val_fraction=0.2))
    _train(config, tmp_path / "ema")
    for name, checkpoint in (("checkpoint.pt", "last"), ("checkpoint-best.pt", "best")):
        state = load_checkpoint(tmp_path / "ema" / name)
        assert any(not torch.equal(state["model"][k], v) for k, v in state["train_model"].items())
        for weights, key in (("average", "model"), ("trained", "train_model")):
            with caplog.at_level("INFO", logger="pyrovae"):
                run = load_run(tmp_path / "ema", "cpu", checkpoint=checkpoint, weights=weights)
            loaded = run.vae.state_dict()
            assert all(torch.equal(loaded[k], v) for k, v in state[key].items()), (name, key)
            assert (run.checkpoint, run.weights) == (checkpoint, weights)
            assert ("moving average" if weights == "average" else "trained weights") in (
                caplog.records[-1].getMessage()
            )

    # A best checkpoint written before it kept the trained weights: refused, not averaged.
    best = load_checkpoint(tmp_path / "ema" / "checkpoint-best.pt")
    best.pop("train_model")
    kept = {k: v for k, v in best.items() if k not in ("format", "version")}
    save_checkpoint(tmp_path / "ema" / "checkpoint-best.pt", kept)
    with pytest.raises(CheckpointError, match="only the averaged weights.*--checkpoint last"):
        load_run(tmp_path / "ema", "cpu", weights="trained")
    with pytest.raises(ConfigError, match="--weights must be average or trained"):
        load_run(tmp_path / "ema", "cpu", weights="raw")

    # Without an EMA, both names are the one set of weights it trained.
    plain = dataclasses.replace(config, train=dataclasses.replace(config.train, ema=0.0))
    _train(plain, tmp_path / "plain")
    model = load_checkpoint(tmp_path / "plain" / "checkpoint.pt")["model"]
    for weights in ("average", "trained"):
        run = load_run(tmp_path / "plain", "cpu", checkpoint="last", weights=weights)
        assert run.weights == "trained"
        assert all(torch.equal(run.vae.state_dict()[k], v) for k, v in model.items())
