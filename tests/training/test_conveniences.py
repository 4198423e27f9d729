"""Training conveniences: the run's TOML config, the validation split, the learning-rate
schedules, gradient clipping, evaluation at intervals with a time account, the best
checkpoint and early stopping, --max-time with an exact resume, and the loggers."""

from __future__ import annotations

import dataclasses
import math

import pytest
import tomllib
import torch

from pyrovae.config import RunConfig, TrainConfig
from pyrovae.data.dataset import ArrayData
from pyrovae.errors import ConfigError


def _tiny(tmp_path, name, **train):
    from pyrovae.config import DataConfig
    from pyrovae.model.spec import model_config

    return RunConfig(
        data=DataConfig(dataset="digits", val_fraction=train.pop("val_fraction", 0.0)),
        model=model_config(hidden=(16,), latent_dim=2),
        train=TrainConfig(batch_size=256, device="cpu", eval_size=60, **train),
    )


def _train(config, out):
    from pyrovae.training.run import train

    return train(config, out, progress=False, log=lambda line: None)


def test_the_toml_config_reads_back_as_the_same_options(tmp_path):
    from pyrovae.model.spec import model_config

    config = RunConfig(model=model_config(guide="iaf", flows=2, hidden=(32, 16)))
    config.data.dataset = 'odd "name"\\x'
    config.train.lr_schedule = "cosine"
    config.save_toml(tmp_path / "config.toml")
    read = tomllib.loads((tmp_path / "config.toml").read_text())
    expected = config.to_options()
    expected["model"] = expected.pop("kind")  # keyed by option name: --model
    assert read == {k: list(v) if isinstance(v, tuple) else v for k, v in expected.items()}
    assert read["flows"] == 2 and read["hidden"] == [32, 16] and read["latent_dim"] == 16
    spec = {"class": "my.module:Net", "kwargs": {"width": 12, "odd key": "x", "gone": None}}
    config = RunConfig(model=model_config(network="module", encoder=spec, decoder=spec))
    config.save_toml(tmp_path / "module.toml")
    read = tomllib.loads((tmp_path / "module.toml").read_text())
    assert read["encoder"] == {"class": "my.module:Net", "kwargs": {"width": 12, "odd key": "x"}}


def test_a_config_from_before_the_validation_split_keeps_its_test_share():
    old = RunConfig.from_dict({"data": {"dataset": "x.npy", "val_fraction": 0.25}})
    assert old.data.test_fraction == 0.25 and old.data.val_fraction == 0.0
    new = RunConfig.from_dict({"data": {"val_fraction": 0.2, "test_fraction": 0.1}})
    assert (new.data.val_fraction, new.data.test_fraction) == (0.2, 0.1)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"patience": 2}, "--patience stops on the validation ELBO"),
        ({"max_time": -1.0}, "--max-time"),
        ({"lr_schedule": "step"}, "--lr-schedule"),
        ({"eval_every": 0}, "--eval-every"),
        ({"logger": "wandb"}, "--logger"),
    ],
)
def test_bad_convenience_options_are_refused(change, message):
    config = RunConfig(train=TrainConfig(**change))
    with pytest.raises(ConfigError, match=message):
        config.validate()


def test_the_validation_split_is_carved_from_training_points_only():
    from pyrovae.data.validation import hold_out_validation

    x = torch.rand(50, 1, 2, 2)
    data = ArrayData("x", x, torch.rand(10, 1, 2, 2), torch.arange(50), torch.arange(10))
    held = hold_out_validation(data, 0.2, seed=3, binary=True)
    assert held.validation is not None and held.validation.shape[0] == 10
    assert held.data.train.shape[0] == 40 and torch.equal(held.data.test, data.test)
    assert set(torch.unique(held.validation).tolist()) <= {0.0, 1.0}  # binarized once
    kept = set(held.data.train_labels.tolist())
    assert len(kept) == 40 and torch.equal(held.data.train, x[sorted(kept)])
    again = hold_out_validation(data, 0.2, seed=3, binary=True)
    assert torch.equal(again.validation, held.validation)
    assert hold_out_validation(data, 0.0, seed=3, binary=True).validation is None


def test_the_validation_split_of_streamed_rows_reads_the_remaining_rows():
    from pyrovae.data.validation import RowSubset, hold_out_validation

    class Rows:  # streamed rows as pyrovae.data.streams reads them
        shape, dtype = torch.Size((20, 3)), torch.float32

        def __len__(self):
            return 20

        def __getitem__(self, index):
            return torch.arange(60, dtype=torch.float32).reshape(20, 3)[index]

    data = ArrayData("rows", Rows(), torch.zeros(4, 3))
    held = hold_out_validation(data, 0.25, seed=0, binary=False)
    assert isinstance(held.data.train, RowSubset) and held.data.train.shape == (15, 3)
    seen = {int(v) for v in held.data.train[:][:, 0].tolist()} | {
        int(v) for v in held.validation[:, 0].tolist()
    }
    assert seen == set(range(0, 60, 3))


def test_cosine_and_plateau_schedules():
    from pyrovae.training.schedules import PLATEAU_PATIENCE, learning_rate

    cosine = TrainConfig(lr=1.0, epochs=4, lr_schedule="cosine")
    assert [learning_rate(cosine, e, []) for e in range(4)] == pytest.approx(
        [0.5 * (1 + math.cos(math.pi * e / 4)) for e in range(4)]
    )
    # Under a time budget the schedule follows the epochs or the clock, whichever is ahead.
    budget = TrainConfig(lr=1.0, epochs=100, lr_schedule="cosine", max_time=600.0)
    assert learning_rate(budget, 0, [], time_share=0.0) == 1.0
    assert learning_rate(budget, 1, [], time_share=0.5) == pytest.approx(0.5)
    assert learning_rate(budget, 75, [], time_share=0.5) == pytest.approx(
        0.5 * (1 + math.cos(math.pi * 0.75))
    )
    assert learning_rate(budget, 2, [], time_share=1.5) == pytest.approx(0.0)
    assert learning_rate(budget, 50, []) == pytest.approx(0.5)  # no clock: the epochs
    plateau = TrainConfig(lr=1.0, lr_schedule="plateau")
    rows = [{"epoch": 1, "train_elbo": -10.0, "val_elbo": -5.0}]
    stuck = rows + [{"epoch": e, "train_elbo": -9.0, "val_elbo": -6.0} for e in range(2, 6)]
    assert learning_rate(plateau, 1, rows) == 1.0
    # Halved once PLATEAU_PATIENCE evaluations in a row are not better, and again after
    # as many more.
    assert learning_rate(plateau, 3, stuck[:PLATEAU_PATIENCE]) == 1.0
    assert learning_rate(plateau, 4, stuck[: PLATEAU_PATIENCE + 1]) == 0.5
    assert learning_rate(plateau, 6, stuck[: 2 * PLATEAU_PATIENCE + 1]) == 0.25
    # A slowly falling ELBO is no improvement, whatever its sign (torch's default relative
    # threshold, in max mode, took -100.005 as better than -100).
    for start in (-100.0, 100.0):
        falling = [{"epoch": e, "train_elbo": 0.0, "val_elbo": start - 0.005 * e} for e in range(4)]
        assert learning_rate(plateau, 4, falling[: PLATEAU_PATIENCE + 1]) == 0.5
    rising = [{"epoch": e, "train_elbo": 0.0, "val_elbo": -100.0 + 0.005 * e} for e in range(9)]
    assert learning_rate(plateau, 9, rising) == 1.0
    # Rows of epochs that were not evaluated count for nothing.
    assert learning_rate(plateau, 5, [*rows, {"epoch": 2, "train_elbo": -99.0}] * 2) == 1.0


def test_gradients_are_clipped_to_the_norm(make_vae):
    from pyrovae.inference.objectives import make_objective
    from pyrovae.training.step import TrainStep, make_optimizer

    x = torch.rand(8, 1, 4, 4).bernoulli()
    for clip in (0.0, 1e-3):
        vae = make_vae()
        step = TrainStep(vae, make_objective(TrainConfig()),
                         make_optimizer(vae.parameters(), 1e-3), clip_grad_norm=clip)  # fmt: skip
        step(x)
        norm = torch.linalg.vector_norm(
            torch.stack([p.grad.norm() for p in vae.parameters() if p.grad is not None])
        )
        assert (norm <= 1e-3 * 1.0001) == (clip > 0), norm


def test_patience_counts_evaluations_since_the_best():
    from pyrovae.training.loop import out_of_patience

    rows = [{"val_elbo": v} for v in (-5.0, -4.0, -4.5)]
    assert not out_of_patience(rows, 2) and out_of_patience([*rows, {"val_elbo": -4.2}], 2)
    assert not out_of_patience([*rows, {"train_elbo": -1.0}], 1)  # not an evaluation
    assert not out_of_patience([*rows, {"val_elbo": -4.2}], 0)


def test_plateau_without_validation_skips_the_kl_warm_up():
    # The β-weighted training ELBO falls as β rises: the rate was halved during warm-up
    # while the test ELBO improved every epoch.
    from pyrovae.training.schedules import learning_rate

    plateau = TrainConfig(lr=1.0, lr_schedule="plateau", kl_warmup=3)
    # Its last epoch ends at β = 1 but trained on a β rising to it: it does not count.
    warm_up = [{"epoch": e, "train_elbo": -10.0 - e, "test_elbo": -30.0, "beta": e / 3}
               for e in range(1, 4)]  # fmt: skip
    assert learning_rate(plateau, 3, warm_up) == 1.0
    after = [{"epoch": e, "train_elbo": -20.0, "test_elbo": -30.0, "beta": 1.0} for e in (4, 5, 6)]
    assert learning_rate(plateau, 5, warm_up + after[:2]) == 1.0  # one epoch without gain
    assert learning_rate(plateau, 6, warm_up + after) == 0.5  # a plateau after it still counts


def test_evaluations_off_the_schedule_count_for_neither_patience_nor_plateau():
    """An epoch evaluated only because --max-time stopped there: an uninterrupted run
    has no such evaluation, so the resumed one must not count it."""
    from pyrovae.training.loop import out_of_patience
    from pyrovae.training.schedules import learning_rate

    rows = [{"val_elbo": v, "train_elbo": 0.0} for v in (-5.0, -4.0, -4.5, -4.2)]
    forced = {"val_elbo": -4.7, "train_elbo": 0.0, "off_schedule": True}
    assert out_of_patience(rows, 2)
    assert not out_of_patience([*rows[:3], forced], 2)
    assert not out_of_patience([*rows[:3], forced, rows[3]], 3)
    plateau = TrainConfig(lr=1.0, lr_schedule="plateau")
    assert learning_rate(plateau, 4, rows) == 0.5
    assert learning_rate(plateau, 4, [*rows[:3], forced]) == 1.0


def test_evaluations_at_intervals_the_best_checkpoint_and_the_csv_log(tmp_path):
    from pyrovae.api import load_run
    from pyrovae.files import BEST_CHECKPOINT_NAME
    from pyrovae.training.checkpoint import load_checkpoint

    config = _tiny(tmp_path, "r", epochs=3, eval_every=2, val_fraction=0.2, logger="csv",
                   lr_schedule="cosine")  # fmt: skip
    result = _train(config, tmp_path / "r")
    rows = result.history
    assert ["test_elbo" in row for row in rows] == [False, True, True]
    assert all("val_elbo" in row for row in rows[1:]) and rows[-1]["test_points"] == 60
    assert [row["lr"] for row in rows] == pytest.approx(
        [1e-3 * 0.5 * (1 + math.cos(math.pi * e / 3)) for e in range(3)]
    )
    assert all(row["overhead_seconds"] >= 0 for row in rows)
    timing = result.timing
    assert timing["train"] == pytest.approx(sum(row["seconds"] for row in rows))
    assert timing["wall"] >= timing["train"] + timing["other"]
    best_epoch = max(rows[1:], key=lambda row: row["val_elbo"])["epoch"]
    assert load_checkpoint(tmp_path / "r" / BEST_CHECKPOINT_NAME)["epoch"] == best_epoch
    assert load_run(tmp_path / "r", device="cpu").epoch == best_epoch
    last = load_run(tmp_path / "r", device="cpu", checkpoint="last")
    assert (last.checkpoint, last.epoch) == ("last", 3)
    logs = tmp_path / "r" / "logs"
    epochs = (logs / "epochs.csv").read_text().splitlines()
    assert len(epochs) == 4 and "val_elbo" in epochs[0] and "lr" in epochs[0]
    assert len((logs / "steps.csv").read_text().splitlines()) == 4  # one step per epoch here
    assert sorted(p.name for p in (logs / "images").iterdir()) == [
        "reconstructions-epoch0002.png", "reconstructions-epoch0003.png",
        "samples-epoch0002.png", "samples-epoch0003.png",
    ]  # fmt: skip


def test_cosine_under_a_time_budget_anneals_over_the_budget(tmp_path, monkeypatch):
    """With 10,000 epochs that will never run, the epochs' schedule would stay at --lr;
    the budget's takes the step size down as the clock runs out. The training loop's
    clock is a counter that advances 0.1 s per reading (about 0.6 s per epoch), so the
    test does not depend on the machine's speed."""
    import itertools
    import types

    from pyrovae.training import loop

    ticks = itertools.count()
    fake_time = types.SimpleNamespace(perf_counter=lambda: 0.1 * next(ticks))
    monkeypatch.setattr(loop, "time", fake_time)
    config = _tiny(tmp_path, "c", epochs=10_000, max_time=5.0, lr_schedule="cosine",
                   eval_every=10_000)  # fmt: skip
    rows = _train(config, tmp_path / "c").history
    assert rows[-1]["stopped"] == "time" and len(rows) > 3
    assert rows[0]["lr"] == pytest.approx(1e-3, rel=0.01)
    lrs = [row["lr"] for row in rows]
    assert all(a > b for a, b in zip(lrs, lrs[1:], strict=False))
    assert lrs[-1] < 0.5e-3  # past half the budget; by the epochs alone it would be 1e-3


def test_the_budget_share_is_of_what_setup_left(monkeypatch):
    from pyrovae.training import loop

    clock = loop.Clock(started=100.0, loop_started=120.0)
    monkeypatch.setattr(loop.time, "perf_counter", lambda: 160.0)
    assert clock.budget_share(100.0) == pytest.approx(0.5)  # 40 s of the 80 s left
    assert clock.budget_share(0.0) is None and clock.budget_share(20.0) is None


def test_the_time_budget_keeps_room_for_the_evaluations_ahead(monkeypatch):
    """Another epoch costs its steps and the evaluations still ahead: this epoch's when
    the schedule evaluates it, and the one the run stops with; not the mean epoch
    alone, where --eval-every N spreads an evaluation thin."""
    import types

    from pyrovae.training import loop

    clock = loop.Clock(started=0.0, loop_started=0.0)
    clock.epochs = 10
    clock.evaluated(3.0)  # one evaluation and checkpoint so far, of 3 s
    monkeypatch.setattr(loop.time, "perf_counter", lambda: 53.0)  # 10 epochs of 5 s and it
    assert clock.per_epoch() == pytest.approx(5.0)
    config = RunConfig(train=TrainConfig(max_time=62.0, eval_every=5, epochs=100))
    training = types.SimpleNamespace(config=config, clock=clock, epochs=100)
    assert loop.Training.time_is_up(training, 10) is None  # 53 + 5 + 3 <= 62
    assert loop.Training.time_is_up(training, 9) == "time"  # epoch 10 is evaluated: + 3 more
    config.train.max_time = 65.0
    assert loop.Training.time_is_up(training, 9) is None


def test_the_time_budget_reckons_an_evaluation_before_one_is_timed(monkeypatch):
    """A fresh run's first evaluation is reckoned from the points it scores (at an
    epoch's time per point); a resumed run's from the last one its history timed."""
    import types

    from pyrovae.training import loop

    clock = loop.Clock(started=0.0, loop_started=0.0)
    clock.epochs = 10
    monkeypatch.setattr(loop.time, "perf_counter", lambda: 50.0)  # 10 epochs of 5 s
    config = RunConfig(train=TrainConfig(max_time=56.5, eval_every=5, epochs=100))
    data = types.SimpleNamespace(train=torch.zeros(1000, 2), test=torch.zeros(150, 2))
    training = types.SimpleNamespace(
        config=config, clock=clock, epochs=100, data=data, validation=torch.zeros(50, 2),
        context=types.SimpleNamespace(world_size=2),
    )  # fmt: skip
    training.evaluation_guess = lambda: loop.Training.evaluation_guess(training)
    # An epoch of 5 s over this process's 500 points (of 1000, in 2 processes); the
    # evaluation scores 200 on this process alone.
    assert training.evaluation_guess() == pytest.approx(2.0)
    training.context.world_size = 1
    assert training.evaluation_guess() == pytest.approx(1.0)  # 5 s x 200 / 1000 points
    assert loop.Training.time_is_up(training, 10) is None  # 50 + 5 + 1 <= 56.5
    config.train.max_time = 55.5
    assert loop.Training.time_is_up(training, 10) == "time"
    config.train.eval_size = 50  # 100 points scored: 0.5 s
    assert loop.Training.time_is_up(training, 10) is None
    clock.resumed([{"epoch": 5, "test_elbo": -1.0, "overhead_seconds": 4.0}, {"epoch": 6}])
    assert clock.last_evaluation == 4.0
    config.train.max_time = 58.5
    assert loop.Training.time_is_up(training, 10) == "time"  # 50 + 5 + 4 > 58.5


def test_max_time_stops_with_a_checkpoint_that_resumes_exactly(tmp_path):
    from pyrovae.training.run import resume

    config = _tiny(tmp_path, "a", epochs=2, logger="csv", eval_every=2)
    whole = _train(config, tmp_path / "whole")
    stopped = _train(dataclasses.replace(config, train=dataclasses.replace(
        config.train, max_time=1e-3)), tmp_path / "stopped")  # fmt: skip
    assert [row.get("stopped") for row in stopped.history] == ["time"]
    assert "test_elbo" in stopped.history[-1]
    # Evaluated only because the time was up (the schedule evaluates epoch 2, the last).
    assert stopped.history[-1]["off_schedule"] is True
    assert not any("off_schedule" in row for row in whole.history)
    assert not stopped.timing["train"] > stopped.timing["wall"]
    resumed = resume(tmp_path / "stopped", max_time=0, progress=False, log=lambda line: None)
    assert len(resumed.history) == 2
    for a, b in zip(whole.vae.state_dict().values(), resumed.vae.state_dict().values(),
                    strict=True):  # fmt: skip
        assert torch.equal(a, b)
    steps = (tmp_path / "stopped" / "logs" / "steps.csv").read_text().splitlines()
    assert [line.split(",")[1] for line in steps[1:]] == ["1", "2"]


def test_a_run_stopped_by_its_patience_is_not_trained_further(tmp_path, monkeypatch):
    from pyrovae.training import loop
    from pyrovae.training.run import resume

    monkeypatch.setattr(loop, "out_of_patience", lambda history, patience: len(history) == 2)
    config = _tiny(tmp_path, "p", epochs=4, val_fraction=0.2, patience=1)
    result = _train(config, tmp_path / "p")
    assert len(result.history) == 2 and result.history[-1]["stopped"] == "patience"
    # Its figures missing (this run drew none), a resume draws them and trains nothing;
    # it neither records an --epochs it will never train nor says it is "resuming".
    lines: list[str] = []
    again = resume(tmp_path / "p", epochs=100, progress=False, log=lines.append)
    assert again.history == result.history
    assert not any(line.startswith("resuming") for line in lines), lines
    assert RunConfig.load(tmp_path / "p" / "config.json").train.epochs == 4
    for name in ("samples.png", "reconstructions.png", "loss_curve.png"):
        (tmp_path / "p" / name).write_bytes(b"")
    with pytest.raises(ConfigError, match="stopped early after epoch 2"):
        resume(tmp_path / "p", progress=False, log=lambda line: None)


def test_tensorboard_logs_scalars_and_images(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _train(_tiny(tmp_path, "t", epochs=1, logger="tensorboard"), tmp_path / "t")
    events = EventAccumulator(str(tmp_path / "t" / "tensorboard"))
    events.Reload()
    tags = events.Tags()
    assert {"loss/step", "epoch/test_elbo", "epoch/lr", "epoch/beta"} <= set(tags["scalars"])
    assert {"samples", "reconstructions"} <= set(tags["images"])


def test_a_missing_tensorboard_is_one_line_before_anything_is_written(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("tensorboard"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    with pytest.raises(ConfigError, match=r"pip install 'pyrovae\[tensorboard\]'"):
        _train(_tiny(tmp_path, "t", epochs=1, logger="tensorboard"), tmp_path / "t")
    assert not (tmp_path / "t").exists()


def test_how_often_and_on_what_a_run_is_evaluated_does_not_change_its_training(tmp_path):
    """The test ELBO draws as many codes as its standard error needs, which depends on
    the weights it scores (an EMA's or the last ones): from the training's random
    stream, that would change every later batch."""
    runs = {
        name: _train(_tiny(tmp_path, name, epochs=4, **options), tmp_path / name)
        for name, options in {
            "every": {"eval_every": 1},
            "ema": {"eval_every": 1, "ema": 0.5},
            "once": {"eval_every": 4},
        }.items()
    }
    losses = {name: [row["train_elbo"] for row in run.history] for name, run in runs.items()}
    assert losses["every"] == losses["ema"] == losses["once"]
    assert runs["every"].history[-1]["test_elbo"] != runs["ema"].history[-1]["test_elbo"]
