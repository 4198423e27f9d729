from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from pyrovae.api import load_run, resume, sample, train
from pyrovae.config import RunConfig
from pyrovae.data.prepare import prepare_data
from pyrovae.errors import ConfigError, DataError, FileWriteError, TrainingError
from pyrovae.files import CHECKPOINT_NAME
from pyrovae.inference.objectives import evaluate_elbo
from pyrovae.model.likelihoods.base import LIKELIHOODS
from pyrovae.model.networks.base import NETWORKS
from pyrovae.model.spec import model_config, resolve
from pyrovae.model.vae import VAE
from pyrovae.training import rundir
from pyrovae.training.checkpoint import load_checkpoint
from pyrovae.training.schedules import kl_weight


def _quiet(_: str) -> None:
    pass


def test_training_improves_test_elbo_clearly(tiny_config, tmp_path):
    tiny_config.train.epochs = 5
    data = prepare_data(
        tiny_config,
        torch.device("cpu"),
        binary=LIKELIHOODS.get(tiny_config.model.likelihood).binary,
    )
    tiny_config.model.data_shape = data.data_shape
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
    assert saved.model.data_shape == (1, 8, 8)
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


@pytest.mark.parametrize("name", ["metrics.jsonl", "samples.png", "logs/epochs.csv"])
def test_a_folder_with_files_a_run_writes_is_not_overwritten(tiny_config, tmp_path, name):
    # Not a run (no config.json), yet training would overwrite what it holds.
    tiny_config.train.logger = "csv"
    (tmp_path / "out" / "logs").mkdir(parents=True)
    (tmp_path / "out" / name).write_text("the user's")
    with pytest.raises(ConfigError, match=f"not a run folder but holds {name}, which training"):
        train(tiny_config, tmp_path / "out", progress=False, log=_quiet)
    assert (tmp_path / "out" / name).read_text() == "the user's"
    assert {path.name for path in (tmp_path / "out").iterdir()} <= {name, "logs"}


def test_a_folder_of_the_users_own_logs_is_no_run_of_another_logger(tiny_config, tmp_path):
    # A batch job's logs/ beside the run: refused though --logger none writes none there.
    (tmp_path / "out" / "logs").mkdir(parents=True)
    (tmp_path / "out" / "logs" / "job.log").write_text("the scheduler's")
    train(tiny_config, tmp_path / "out", progress=False, log=_quiet)
    assert (tmp_path / "out" / "logs" / "job.log").read_text() == "the scheduler's"


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


@pytest.mark.parametrize("network", NETWORKS.names())
def test_every_registered_network_trains_resumes_and_samples(tiny_config, tmp_path, network):
    """Any network that builds from its options alone (the ``module`` network needs the
    caller's modules: tests/test_api.py) trains on the 8x8 digits, resumes, reloads and
    samples finite images. That a resumed run equals an uninterrupted one is
    test_stop_and_resume_equals_uninterrupted_run's (the network plays no part in it)."""
    try:
        tiny_config.model = model_config(tiny_config.model, network=network)
        resolve(tiny_config.model)
    except ConfigError as err:
        pytest.skip(f"needs more than its options: {err}")
    from pyrovae.training import run  # without the figures of pyrovae.train: faster

    tiny_config.train.epochs, tiny_config.train.eval_size = 1, 100  # a score, not a figure
    first = run.train(tiny_config, tmp_path / "run", progress=False, log=_quiet)
    resumed = run.resume(tmp_path / "run", epochs=2, progress=False, log=_quiet)
    assert [row["epoch"] for row in resumed.history] == [1, 2]
    assert math.isfinite(first.final["test_elbo"]) and math.isfinite(resumed.final["test_elbo"])
    images = sample(load_run(tmp_path / "run", device="cpu"), n=5, seed=0)
    assert images.shape == (5, *first.config.model.data_shape)
    assert torch.isfinite(images).all()


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
    data = prepare_data(
        tiny_config,
        torch.device("cpu"),
        binary=LIKELIHOODS.get(tiny_config.model.likelihood).binary,
    )
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
    from pyrovae.training.loop import rng_state, set_rng_state

    def untouchable(*args, **kwargs):
        raise AssertionError("a CPU run touched CUDA")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for name in ("get_rng_state", "get_rng_state_all", "set_rng_state", "set_rng_state_all"):
        monkeypatch.setattr(torch.cuda, name, untouchable)
    cpu, generator = torch.device("cpu"), torch.Generator()
    state = rng_state(generator, cpu)
    assert set(state) == {"torch", "data"}
    set_rng_state({**state, "cuda": torch.zeros(16, dtype=torch.uint8)}, generator, cpu)


def test_each_machines_first_process_loads_the_data_before_the_others(tiny_config, monkeypatch):
    """So that a data set the first one downloads is on disk before the others look for it."""
    from pyrovae.training import loop as training
    from pyrovae.training.distributed import Context

    events: list[str] = []

    class Recorder(Context):
        def barrier(self) -> None:
            events.append("barrier")

    def load(config, device, binary):
        events.append("load")
        return prepare_data(config, device, binary=LIKELIHOODS.get(config.model.likelihood).binary)

    def stop(config, device, **_):
        raise DataError("stop here")

    monkeypatch.setattr(training, "prepare_data", load)
    monkeypatch.setattr(training, "build_vae", stop)
    for local_rank, expected in ((0, ["load", "barrier"]), (1, ["barrier", "load"])):
        events.clear()
        context = Recorder(rank=local_rank, world_size=2, local_rank=local_rank)
        with pytest.raises(DataError, match="stop here"):
            training.fit(tiny_config, Path("unused"), checkpoint=None, progress=False,
                          log=_quiet, context=context)  # fmt: skip
        assert events == expected, local_rank


def test_resume_of_a_finished_run_asks_for_more_epochs(tiny_config, tmp_path):
    train(tiny_config, tmp_path / "run", progress=False, log=_quiet)
    config_before = (tmp_path / "run" / "config.json").read_text()
    for epochs in (None, 1, 2):
        with pytest.raises(ConfigError, match="--epochs N with N > 2"):
            resume(tmp_path / "run", epochs=epochs, progress=False, log=_quiet)
    assert (tmp_path / "run" / "config.json").read_text() == config_before


def test_a_resume_refuses_a_data_file_changed_since(tiny_config, tmp_path):
    # It trained and scored the new points, under the old test-ELBO history, silently.
    images = np.random.default_rng(0).random((50, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", images)
    tiny_config.data.dataset = str(tmp_path / "x.npy")
    train(tiny_config, tmp_path / "run", progress=False, log=_quiet)
    assert RunConfig.load(tmp_path / "run" / "config.json").data.sizes == [45, 5]
    np.save(tmp_path / "x.npy", images[:20])
    with pytest.raises(DataError, match=r"has changed since .* 45 \+ 5 points .*, now 18 \+ 2"):
        resume(tmp_path / "run", epochs=3, progress=False, log=_quiet)
    np.save(tmp_path / "x.npy", images)  # put back: the run goes on
    assert resume(tmp_path / "run", epochs=3, progress=False, log=_quiet).history[-1]["epoch"] == 3


# --- the run directory: claimed before the data load, locked, cleaned up ---------------


def _no_data_load(monkeypatch):
    from pyrovae.training import loop as training

    def refuse(config, device, binary):
        raise AssertionError("the data were loaded before the run directory was checked")

    monkeypatch.setattr(training, "prepare_data", refuse)


@pytest.mark.parametrize("where", ["proc", "under-a-file"])
def test_an_out_that_cannot_be_created_fails_before_the_data_load(
    tiny_config, tmp_path, monkeypatch, where
):
    _no_data_load(monkeypatch)
    (tmp_path / "file").write_text("not a folder")
    out = Path("/proc/pyrovae-run") if where == "proc" else tmp_path / "file" / "run"
    with pytest.raises(FileWriteError, match="cannot create the run directory") as info:
        train(tiny_config, out, progress=False, log=_quiet)
    assert "\n" not in str(info.value)
    assert (tmp_path / "file").read_text() == "not a folder"


def test_an_empty_out_is_refused_not_read_as_the_current_folder(tiny_config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="--out is an empty path"):
        train(tiny_config, "", progress=False, log=_quiet)
    assert not list(tmp_path.iterdir())


def test_a_fresh_run_that_fails_on_bad_input_removes_the_folders_it_made(tiny_config, tmp_path):
    np.save(tmp_path / "bad.npy", np.full((20, 8, 8), np.nan, dtype=np.float32))
    tiny_config.data.dataset = str(tmp_path / "bad.npy")
    (tmp_path / "kept").mkdir()
    for out in (tmp_path / "new" / "deeper" / "run", tmp_path / "kept"):
        with pytest.raises(DataError):
            train(tiny_config, out, progress=False, log=_quiet)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.npy", "kept"]
    assert list((tmp_path / "kept").iterdir()) == []  # a folder it did not make: left, empty


def test_a_finished_run_leaves_no_lock_file(tiny_config, tmp_path):
    result = train(tiny_config, tmp_path / "run", progress=False, log=_quiet)
    assert not [p.name for p in result.run_dir.iterdir() if p.name.startswith(".")]


_HOLD_THE_RUN = """\
import sys
from pyrovae.cli import main
main(sys.argv[1:])
"""


def test_a_second_writer_and_a_resume_of_a_live_run_are_refused_naming_the_holder(
    tiny_config, tmp_path
):
    """A run training in another process holds its folder: ``train --out SAME`` and
    ``train --resume`` get one line naming it; killed, it holds nothing."""
    import signal
    import subprocess
    import sys
    import time

    from pyrovae.errors import RunLockedError

    run_dir = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_THE_RUN, "train", "--out", str(run_dir), "--epochs",
         "100000", "--hidden", "32", "--latent-dim", "4", "--device", "cpu", "--no-progress"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "config.json").exists():
            assert holder.poll() is None, holder.stderr.read() if holder.stderr else ""
            assert time.monotonic() < deadline, "the holder did not start in time"
            time.sleep(0.2)
        for attempt in (
            lambda: train(tiny_config, run_dir, progress=False, log=_quiet),
            lambda: resume(run_dir, epochs=100001, progress=False, log=_quiet),
        ):
            with pytest.raises(RunLockedError, match=f"in use by .*pid {holder.pid}") as info:
                attempt()
            assert "\n" not in str(info.value)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    rundir.claim(run_dir, create=False).release()  # the lock died with its holder


def test_resume_removes_temporary_files_an_interrupted_write_left(tiny_config, tmp_path):
    tiny_config.train.epochs = 1
    train(tiny_config, tmp_path / "run", progress=False, log=_quiet)
    stale = tmp_path / "run" / ".metrics.jsonl.k3x9q1.tmp.jsonl"  # what atomic_write names it
    stale.write_text('{"epoch": 1')
    lines: list[str] = []
    resume(tmp_path / "run", epochs=2, progress=False, log=lines.append)
    assert not stale.exists()
    assert any(stale.name in line for line in lines)


def test_resume_with_no_new_epochs_draws_the_figures_a_killed_run_lacks(tiny_config, tmp_path):
    from pyrovae.files import RUN_FIGURES

    train(tiny_config, tmp_path / "run", progress=False, log=_quiet)
    run_dir = tmp_path / "run"
    checkpoint = (run_dir / CHECKPOINT_NAME).read_bytes()
    for name in ("samples.png", "loss_curve.png"):  # killed while drawing
        (run_dir / name).unlink()
    lines: list[str] = []
    result = resume(run_dir, progress=False, log=lines.append)
    assert all((run_dir / name).is_file() for name in RUN_FIGURES)
    assert any("drawing its missing figures" in line for line in lines)
    assert (run_dir / CHECKPOINT_NAME).read_bytes() == checkpoint  # no epoch trained
    assert [row["epoch"] for row in result.history] == [1, 2]


def test_a_finished_run_drawing_figures_does_not_record_a_new_lr_or_particles(
    tiny_config, tmp_path
):
    from pyrovae.config import RunConfig
    from pyrovae.files import CONFIG_NAME

    train(tiny_config, tmp_path / "run", progress=False, log=_quiet)
    run_dir = tmp_path / "run"
    before = RunConfig.load(run_dir / CONFIG_NAME)
    (run_dir / "samples.png").unlink()  # killed while drawing
    lines: list[str] = []
    resume(run_dir, lr=0.123, particles=7, progress=False, log=lines.append)
    after = RunConfig.load(run_dir / CONFIG_NAME)
    assert (after.train.lr, after.train.particles) == (before.train.lr, before.train.particles)
    assert (run_dir / "samples.png").is_file()
    assert any("not recorded" in line and "lr, particles" in line for line in lines)


def test_run_figures_names_what_the_run_draws(tiny_config, tmp_path):
    from pyrovae.files import RUN_FIGURES

    result = train(tiny_config, tmp_path / "run", progress=False, log=_quiet)
    assert {p.name for p in result.run_dir.glob("*.png")} == set(RUN_FIGURES)


# --- interruptions and failed writes say what is kept ----------------------------------


def test_ctrl_c_during_the_data_load_leaves_nothing_and_says_so(tiny_config, tmp_path, monkeypatch):
    from pyrovae.training import loop as training
    from pyrovae.training.run import TrainingInterrupted

    def interrupted(config, device, binary):
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "prepare_data", interrupted)
    with pytest.raises(TrainingInterrupted, match="nothing was written") as info:
        train(tiny_config, tmp_path / "run", progress=False, log=_quiet)
    assert "--resume" not in str(info.value)
    assert not (tmp_path / "run").exists()


def _ctrl_c_in_call(n: int, real):
    """``real``, but Ctrl-C (KeyboardInterrupt) in its ``n``-th call."""
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    return interrupted


def test_ctrl_c_in_a_later_epoch_names_the_checkpoint_kept(tiny_config, tmp_path, monkeypatch):
    from pyrovae.training import loop as training
    from pyrovae.training.run import TrainingInterrupted

    monkeypatch.setattr(training, "train_epoch", _ctrl_c_in_call(2, training.train_epoch))
    run_dir = tmp_path / "run"
    with pytest.raises(TrainingInterrupted, match="checkpoint of epoch 1") as info:
        train(tiny_config, run_dir, progress=False, log=_quiet)
    assert f"--resume {run_dir}" in str(info.value)
    monkeypatch.undo()
    assert resume(run_dir, progress=False, log=_quiet).history[-1]["epoch"] == 2


def test_a_full_disk_names_the_checkpoint_kept(tiny_config, tmp_path, monkeypatch):
    import errno

    from pyrovae.files import atomic_write
    from pyrovae.training import loop as training

    real = training.save_checkpoint

    def disk_full_in_epoch_2(path, state):
        if state["epoch"] < 2:
            return real(path, state)

        def fill(handle):
            raise OSError(errno.ENOSPC, "No space left on device")

        atomic_write(path, fill)

    monkeypatch.setattr(training, "save_checkpoint", disk_full_in_epoch_2)
    run_dir = tmp_path / "run"
    with pytest.raises(FileWriteError, match="No space left on device") as info:
        train(tiny_config, run_dir, progress=False, log=_quiet)
    message = str(info.value)
    assert "the checkpoint of epoch 1" in message and f"--resume {run_dir}" in message
    assert "\n" not in message
    assert load_checkpoint(run_dir / CHECKPOINT_NAME)["epoch"] == 1
    assert not [p.name for p in run_dir.iterdir() if p.name.startswith(".")]


def test_the_best_checkpoint_is_written_after_the_last(tiny_config, tmp_path, monkeypatch):
    """A failed write of the best checkpoint leaves the last one of its epoch (and the
    message says so); a failed write of the last leaves the best of an older epoch,
    which the resumed run's history still holds."""
    import errno

    from pyrovae.files import BEST_CHECKPOINT_NAME, atomic_write
    from pyrovae.training import loop as training

    real = training.save_checkpoint
    written: list[str] = []

    def best_fails_in_epoch_2(path, state):
        written.append(Path(path).name)
        if state["epoch"] < 2 or Path(path).name != BEST_CHECKPOINT_NAME:
            return real(path, state)

        def fill(handle):
            raise OSError(errno.ENOSPC, "No space left on device")

        atomic_write(path, fill)

    monkeypatch.setattr(training, "save_checkpoint", best_fails_in_epoch_2)
    tiny_config.data.val_fraction = 0.2
    tiny_config.train.epochs = 2
    run_dir = tmp_path / "run"
    with pytest.raises(FileWriteError, match="No space left on device") as info:
        train(tiny_config, run_dir, progress=False, log=_quiet)
    assert written[:2] == [CHECKPOINT_NAME, BEST_CHECKPOINT_NAME]
    assert "the checkpoint of epoch 2" in str(info.value)
    assert load_checkpoint(run_dir / CHECKPOINT_NAME)["epoch"] == 2
    assert load_checkpoint(run_dir / BEST_CHECKPOINT_NAME)["epoch"] == 1
    # --resume writes the best of epoch 2 from the last checkpoint: no later epoch
    # need beat it for the best file to be repaired.
    monkeypatch.undo()
    resume(run_dir, progress=False, log=_quiet)
    best = load_checkpoint(run_dir / BEST_CHECKPOINT_NAME)
    last = load_checkpoint(run_dir / CHECKPOINT_NAME)
    assert best["epoch"] == 2
    for name, tensor in last["model"].items():
        assert torch.equal(best["model"][name], tensor)


def test_an_evaluation_forced_by_the_time_budget_is_not_picked_as_the_best(
    tiny_config, tmp_path, monkeypatch
):
    """The best checkpoint of a run stopped by --max-time and resumed is that of the
    uninterrupted run: the forced evaluation (epoch 3, the highest) is not a candidate."""
    from pyrovae.files import BEST_CHECKPOINT_NAME
    from pyrovae.training import loop as training

    val = {1: -50.0, 2: -45.0, 3: -40.0, 4: -44.0}
    real_evaluate = training.Training.evaluate_checked
    real_time_is_up = training.Training.time_is_up

    def run(out, stop_after=None):
        def evaluate(self, epoch, history):
            return {**real_evaluate(self, epoch, history), "val_elbo": val[epoch + 1]}

        def time_is_up(self, epoch):
            return "time" if epoch + 1 == stop_after else real_time_is_up(self, epoch)

        monkeypatch.setattr(training.Training, "evaluate_checked", evaluate)
        monkeypatch.setattr(training.Training, "time_is_up", time_is_up)
        if (out / CHECKPOINT_NAME).exists():
            return resume(out, progress=False, log=_quiet)
        return train(tiny_config, out, progress=False, log=_quiet)

    tiny_config.data.val_fraction = 0.2
    tiny_config.train.epochs, tiny_config.train.eval_every = 4, 2
    run(tmp_path / "whole")
    cut = run(tmp_path / "cut", stop_after=3)
    assert cut.history[-1]["off_schedule"] and cut.history[-1]["val_elbo"] == -40.0
    assert load_checkpoint(tmp_path / "cut" / BEST_CHECKPOINT_NAME)["epoch"] == 2
    run(tmp_path / "cut")
    for name in ("whole", "cut"):
        assert load_checkpoint(tmp_path / name / BEST_CHECKPOINT_NAME)["epoch"] == 4


# --- divergence ------------------------------------------------------------------------


def test_a_nan_loss_in_epoch_1_names_no_checkpoint(tiny_config, tmp_path):
    tiny_config.train.lr = 1e8
    with pytest.raises(TrainingError, match="epoch 1: training diverged") as info:
        train(tiny_config, tmp_path / "run", progress=False, log=_quiet)
    message = str(info.value)
    assert "no checkpoint was written" in message and "epoch 0" not in message
    assert "--lr 0.001" in message and "\n" not in message
    assert not (tmp_path / "run" / CHECKPOINT_NAME).exists()


def test_outputs_sent_to_inf_by_the_last_step_are_divergence(tiny_config, tmp_path):
    """One step per epoch: its loss, made before the step, is finite, but the step sends
    the networks' outputs to inf; the test ELBO's validation finds it. A one-line error,
    not Pyro's traceback."""
    tiny_config.train.batch_size = 2048  # the 1,437 training digits in one batch
    tiny_config.train.lr = 1e20  # weights of 1e20: products of them overflow float32
    with pytest.raises(TrainingError, match="outputs became invalid in epoch 1") as info:
        train(tiny_config, tmp_path / "run", progress=False, log=_quiet)
    message = str(info.value)
    assert "fail the constraint Real()" in message  # the guide's loc (the encoder overflows)
    assert "no checkpoint was written" in message and "--lr 0.001" in message
    assert "\n" not in message
    assert not (tmp_path / "run" / CHECKPOINT_NAME).exists()


def test_invalid_parameter_names_the_distribution_and_nothing_else():
    import pyro.distributions as dist

    from pyrovae.training.divergence import invalid_parameter

    with pytest.raises(ValueError) as info:
        dist.Normal(torch.zeros(3), torch.tensor([1.0, 0.0, -1.0]), validate_args=True)
    expected = "Normal's scale fail the constraint GreaterThan(lower_bound=0.0)"
    assert invalid_parameter(info.value) == expected
    assert invalid_parameter(ValueError("shape mismatch\nmore")) is None


def test_a_loss_that_grows_without_bound_is_divergence(tiny_config, tmp_path):
    """lr = 1 keeps the loss finite but sends it to about 5e4 nats, from about 44."""
    tiny_config.train.epochs = 1
    train(tiny_config, tmp_path / "run", progress=False, log=_quiet)
    with pytest.raises(TrainingError, match="loss grew to .* in epoch 2") as info:
        resume(tmp_path / "run", epochs=3, lr=1.0, progress=False, log=_quiet)
    assert f"checkpoint of epoch 1 in {tmp_path / 'run'} is kept" in str(info.value)
    assert load_checkpoint(tmp_path / "run" / CHECKPOINT_NAME)["epoch"] == 1


def test_the_divergence_limit_leaves_healthy_runs_alone(tiny_config, tmp_path):
    """The rule compares each epoch with the untrained model: training only lowers the loss."""
    from pyrovae.inference.objectives import make_objective
    from pyrovae.training import divergence

    tiny_config.train.kl_warmup = 2
    result = train(tiny_config, tmp_path / "run", progress=False, log=_quiet)
    torch.manual_seed(tiny_config.train.seed)
    data = prepare_data(
        tiny_config,
        torch.device("cpu"),
        binary=LIKELIHOODS.get(tiny_config.model.likelihood).binary,
    )
    untrained = divergence.untrained_loss(
        VAE(result.vae.config), make_objective(tiny_config.train), data.train, binarize=True
    )
    limit = divergence.loss_limit(untrained, data.data_shape)
    assert all(-row["train_elbo"] < untrained < limit for row in result.history)


def test_resume_says_lr_changed_only_when_it_did_under_a_schedule(tiny_config, tmp_path):
    """The optimizer's saved step size is the schedule's, not the run's lr: a cosine run
    resumed as it was says nothing of the lr; one given --lr says the run's lr changed."""
    tiny_config.train.epochs = 2  # its second epoch ran at half the lr
    tiny_config.train.lr_schedule = "cosine"
    train(tiny_config, tmp_path / "run", progress=False, log=_quiet)
    lines: list[str] = []
    resume(tmp_path / "run", epochs=3, progress=False, log=lines.append)
    assert any(line.startswith("resuming") for line in lines)
    assert not any(" -> " in line for line in lines if line.startswith("resuming")), lines
    lines.clear()
    resume(tmp_path / "run", epochs=4, lr=5e-4, progress=False, log=lines.append)
    assert any("resuming" in line and "lr 0.001 -> 0.0005" in line for line in lines), lines


@pytest.mark.parametrize("schedule, note", [("constant", True), ("cosine", False)])
def test_a_checkpoint_without_its_lr_says_an_lr_change_only_where_it_can_tell(
    tiny_config, tmp_path, schedule, note
):
    """Checkpoints written before they kept the run's lr: without a schedule the
    optimizer's step size is the run's lr, so --lr's change is said; under a schedule it
    is not, so nothing is said rather than a wrong 'from'."""
    tiny_config.train.epochs = 2
    tiny_config.train.lr_schedule = schedule
    train(tiny_config, tmp_path / "run", progress=False, log=_quiet)
    path = tmp_path / "run" / CHECKPOINT_NAME
    old = load_checkpoint(path)
    del old["lr"]
    torch.save(old, path)
    lines: list[str] = []
    resume(tmp_path / "run", epochs=3, lr=5e-4, progress=False, log=lines.append)
    resuming = [line for line in lines if line.startswith("resuming")]
    assert resuming and ("lr 0.001 -> 0.0005" in resuming[0]) is note, resuming
    assert note or " -> " not in resuming[0]


def test_resume_with_a_new_learning_rate_uses_it(tiny_config, tmp_path):
    """The optimizer's saved state no longer overrides the step size: --lr, or an
    lr edited in config.json, is what Adam uses, and config.json records it."""
    tiny_config.train.epochs = 1
    train(tiny_config, tmp_path / "run", progress=False, log=_quiet)
    lines: list[str] = []
    resume(tmp_path / "run", epochs=2, lr=2e-4, progress=False, log=lines.append)
    assert RunConfig.load(tmp_path / "run" / "config.json").train.lr == 2e-4
    optimizer = load_checkpoint(tmp_path / "run" / CHECKPOINT_NAME)["optimizer"]
    assert [group["lr"] for group in optimizer["param_groups"]] == [2e-4]
    assert any("lr 0.001 -> 0.0002" in line for line in lines)

    edited = json.loads((tmp_path / "run" / "config.json").read_text())
    edited["train"]["lr"] = 5e-5
    (tmp_path / "run" / "config.json").write_text(json.dumps(edited))
    resume(tmp_path / "run", epochs=3, progress=False, log=_quiet)
    optimizer = load_checkpoint(tmp_path / "run" / CHECKPOINT_NAME)["optimizer"]
    assert [group["lr"] for group in optimizer["param_groups"]] == [5e-5]


# --- models too large for memory -------------------------------------------------------


@pytest.mark.parametrize(
    "field, value", [("latent_dim", 2_000_000_000), ("hidden", (2_000_000_000,))]
)
def test_a_model_too_large_for_memory_is_one_line_before_allocating(
    tiny_config, tmp_path, field, value
):
    import time

    tiny_config.model = model_config(tiny_config.model, **{field: value})
    started = time.perf_counter()
    with pytest.raises(ConfigError, match="parameters, which need about .* free") as info:
        train(tiny_config, tmp_path / "run", progress=False, log=_quiet)
    assert time.perf_counter() - started < 30  # nothing allocated (or zeroed)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "run").exists()


def test_resume_with_more_particles_trains_on_them_from_there(tiny_config, tmp_path):
    """``--resume --particles``: an IWAE run fine-tuned with more samples. config.json
    records the new count, and the epochs from there differ from a resume that kept it."""
    import shutil

    tiny_config.train.epochs = 1
    tiny_config.train.objective = "iwae"
    tiny_config.train.particles = 2
    train(tiny_config, tmp_path / "a", progress=False, log=_quiet)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    kept = resume(tmp_path / "a", epochs=2, progress=False, log=_quiet)
    lines: list[str] = []
    more = resume(tmp_path / "b", epochs=2, particles=8, progress=False, log=lines.append)
    assert any(line.endswith("after epoch 1 of 2, particles 2 -> 8") for line in lines), lines
    assert RunConfig.load(tmp_path / "a" / "config.json").train.particles == 2
    assert RunConfig.load(tmp_path / "b" / "config.json").train.particles == 8
    assert kept.history[0] == more.history[0]
    assert kept.history[1]["train_elbo"] != more.history[1]["train_elbo"]
    with pytest.raises(ConfigError, match="--particles"):
        resume(tmp_path / "b", epochs=3, particles=0, progress=False, log=_quiet)


def test_running_out_of_memory_is_one_line_that_says_what_is_kept(
    tiny_config, tmp_path, monkeypatch
):
    """An allocation that fails (a GPU's or the host's) ends in a TrainingError of one
    line that names the allocator's message and what the run keeps, not a traceback."""
    from pyrovae.training import labelled

    train(tiny_config, tmp_path / "run", progress=False, log=_quiet)

    def exhausted(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB\nmore")

    monkeypatch.setattr(labelled, "untrained_loss", exhausted)
    with pytest.raises(TrainingError) as resumed:
        resume(tmp_path / "run", epochs=3, progress=False, log=_quiet)
    message = str(resumed.value)
    assert "\n" not in message
    assert message.startswith("out of memory (CUDA out of memory. Tried to allocate 20.00 GiB;")
    assert "--particles" in message and "the checkpoint of epoch 2" in message
    with pytest.raises(TrainingError, match="out of memory .* nothing was written"):
        train(tiny_config, tmp_path / "fresh", progress=False, log=_quiet)
    assert not (tmp_path / "fresh").exists()

    def own_error(*args, **kwargs):
        raise DataError("ran out of memory reading the data")

    monkeypatch.setattr(labelled, "untrained_loss", own_error)
    with pytest.raises(DataError, match="^ran out of memory reading the data$"):
        resume(tmp_path / "run", epochs=3, progress=False, log=_quiet)


def test_resume_refuses_to_start_over_a_run_whose_last_checkpoint_is_gone(tiny_config, tmp_path):
    from pyrovae.errors import CheckpointError
    from pyrovae.files import METRICS_NAME

    tiny_config.train.epochs = 2
    train(tiny_config, tmp_path / "run", progress=False, log=_quiet)
    run_dir = tmp_path / "run"
    metrics = (run_dir / METRICS_NAME).read_text()
    (run_dir / CHECKPOINT_NAME).unlink()
    with pytest.raises(CheckpointError, match="no checkpoint.pt, but its metrics.jsonl") as info:
        resume(run_dir, epochs=3, progress=False, log=_quiet)
    assert "\n" not in str(info.value) and "--out" in str(info.value)
    assert (run_dir / METRICS_NAME).read_text() == metrics  # nothing overwritten


def test_a_resume_that_fails_before_a_new_checkpoint_leaves_the_options_as_they_were(
    tiny_config, tmp_path, monkeypatch
):
    """--lr that diverges at once trained nothing: a plain --resume must not take it again.
    A resume that checkpoints an epoch keeps its options."""
    from pyrovae.config import RunConfig
    from pyrovae.errors import TrainingError
    from pyrovae.files import CONFIG_NAME, TOML_CONFIG_NAME
    from pyrovae.training import loop as training
    from pyrovae.training.run import TrainingInterrupted

    tiny_config.train.epochs = 1
    run_dir = tmp_path / "run"
    train(tiny_config, run_dir, progress=False, log=_quiet)
    before = [(run_dir / name).read_bytes() for name in (CONFIG_NAME, TOML_CONFIG_NAME)]
    with pytest.raises(TrainingError, match="diverged; the checkpoint of epoch 1"):
        resume(run_dir, epochs=4, lr=0.5, progress=False, log=_quiet)
    assert [(run_dir / name).read_bytes() for name in (CONFIG_NAME, TOML_CONFIG_NAME)] == before
    monkeypatch.setattr(training, "train_epoch", _ctrl_c_in_call(2, training.train_epoch))
    with pytest.raises(TrainingInterrupted, match="checkpoint of epoch 2"):
        resume(run_dir, epochs=4, lr=0.002, progress=False, log=_quiet)
    kept = RunConfig.load(run_dir / CONFIG_NAME)
    assert (kept.train.lr, kept.train.epochs) == (0.002, 4)  # epoch 2 trained with them


def test_data_the_untrained_model_cannot_score_are_said_so_not_called_divergence(tmp_path):
    """A loss of nan before any update is no learning-rate problem: it was reported as
    divergence with a lower --lr to try, after two of Pyro's warnings."""
    import pyrovae
    from pyrovae.errors import DataError

    huge = torch.rand(100, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 1e30
    labels = torch.arange(100) % 3
    for kind in ("vae", "m2"):  # m2's reference loss is its own (labels summed out)
        data = huge if kind == "vae" else torch.utils.data.TensorDataset(huge, labels)
        with pytest.raises(DataError, match=r"is nan, before any update .*no learning rate"):
            pyrovae.train(data=data, model=kind, likelihood="gaussian", hidden=(16,),
                          latent_dim=2, epochs=1, out=tmp_path / kind, progress=False,
                          log=lambda _: None)  # fmt: skip
        assert not (tmp_path / kind / "config.json").exists()
