"""``pyrovae train`` from the command line: one-line errors for bad seeds, models too
large for memory and output folders that cannot be made (before the data load),
``--resume DIR --lr``, ``--threads``, and what Ctrl-C says."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from pyrovae.cli import main
from pyrovae.errors import ConfigError

TINY = ["--hidden", "32", "--latent-dim", "4", "--batch-size", "256", "--no-progress"]


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _one_line_error(result) -> str:
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.output
    return lines[0]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--seed", "99999999999999999999999"], "--seed must be from 0 to 4294967295"),
        (["--latent-dim", "2000000000"], "lower --hidden or --latent-dim"),
        (["--hidden", "2000000000"], "lower --hidden or --latent-dim"),
        (
            ["--prior", "mog", "--prior-components", "2000000000"],
            "lower --hidden, --prior-components or --latent-dim",
        ),
        (
            ["--network", "resnet", "--channels-base", "2000000"],
            "lower --hidden, --channels-base, --blocks or --latent-dim",
        ),
        (  # its draws of E[x|z] size no parameter
            ["--likelihood", "autoregressive-bernoulli", "--ar-channels", "100000000"],
            "lower --hidden, --ar-channels, --ar-kernel or --latent-dim",
        ),
    ],
)
def test_out_of_range_values_are_one_line_errors(runner, tmp_path, args, message):
    result = runner.invoke(main, ["train", *TINY, *args, "--out", str(tmp_path / "run")])
    assert message in _one_line_error(result)
    assert not (tmp_path / "run").exists()


def test_an_out_that_cannot_be_made_is_one_line_before_the_data_load(runner, tmp_path, monkeypatch):
    from pyrovae.training import loop as training

    def refuse(config, device, binary):
        raise AssertionError("the data were loaded first")

    monkeypatch.setattr(training, "prepare_data", refuse)
    (tmp_path / "file").write_text("")
    for out in ("/proc/x", str(tmp_path / "file" / "run")):
        line = _one_line_error(runner.invoke(main, ["train", *TINY, "--out", out]))
        assert f"cannot create the run directory {out}" in line


def test_resume_takes_a_new_learning_rate_and_particles_but_not_other_options(runner, tmp_path):
    from pyrovae.config import RunConfig

    run_dir = tmp_path / "run"
    result = runner.invoke(main, ["train", *TINY, "--epochs", "1", "--out", str(run_dir)])
    assert result.exit_code == 0, result.output
    resumed = ["train", "--resume", str(run_dir), "--epochs", "2", "--lr", "3e-4", "--no-progress"]
    result = runner.invoke(main, resumed)
    assert result.exit_code == 0, result.output
    assert "lr 0.001 -> 0.0003" in result.output
    assert RunConfig.load(run_dir / "config.json").train.lr == 3e-4
    resumed = [
        "train",
        "--resume",
        str(run_dir),
        "--epochs",
        "3",
        "--particles",
        "3",
        "--no-progress",
    ]
    assert runner.invoke(main, resumed).exit_code == 0
    assert RunConfig.load(run_dir / "config.json").train.particles == 3
    result = runner.invoke(main, ["train", "--resume", str(run_dir), "--hidden", "64"])
    assert result.exit_code != 0 and "--hidden" in result.output


def test_threads_sets_torchs_threads_and_the_header_says_so(runner, tmp_path, restore_threads):
    out = tmp_path / "run"
    result = runner.invoke(
        main, ["train", *TINY, "--epochs", "1", "--threads", "1", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert torch.get_num_threads() == 1
    assert f"run directory: {out} (device cpu, 1 thread)" in result.output


def test_resume_keeps_the_runs_thread_count_unless_threads_is_given(
    runner, tmp_path, restore_threads
):
    """A run records --threads; --resume without it runs on the run's count, not the
    machine's default, and --resume --threads N changes the record."""
    from pyrovae.config import RunConfig

    out = tmp_path / "run"
    args = ["train", *TINY, "--epochs", "1", "--threads", "1", "--out", str(out)]
    assert runner.invoke(main, args).exit_code == 0
    assert RunConfig.load(out / "config.json").train.threads == 1
    assert "threads = 1" in (out / "config.toml").read_text()
    torch.set_num_threads(2)  # what a new process on this machine would start with
    result = runner.invoke(main, ["train", "--resume", str(out), "--epochs", "2", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert f"run directory: {out} (device cpu, 1 thread)" in result.output
    assert torch.get_num_threads() == 2  # the caller's count is back after the run
    resumed = ["train", "--resume", str(out), "--epochs", "3", "--threads", "2", "--no-progress"]
    result = runner.invoke(main, resumed)
    assert result.exit_code == 0, result.output
    assert f"run directory: {out} (device cpu, 2 threads)" in result.output
    assert RunConfig.load(out / "config.json").train.threads == 2


def test_a_resume_in_several_processes_keeps_torchruns_one_thread_each():
    """N processes on one machine at the recorded count would run N times its threads."""
    from pyrovae.config import RunConfig, TrainConfig
    from pyrovae.training.run import _thread_count

    config = RunConfig(train=TrainConfig(threads=4))
    assert _thread_count(config, given=None, several=False) == 4
    assert _thread_count(config, given=None, several=True) is None  # torchrun's, unchanged
    assert _thread_count(config, given=2, several=True) == 2
    assert _thread_count(RunConfig(), given=None, several=False) is None


def _fake_torchrun(monkeypatch) -> dict[str, str]:
    """``launch``'s torchrun process replaced by one that exits 0 at once; the environment
    it was given lands in the dict returned."""
    from pyrovae.training import distributed

    seen: dict[str, str] = {}

    class Process:
        def __init__(self, command, env):
            seen.update(env)

        def wait(self) -> int:
            return 0

    monkeypatch.setattr(distributed.subprocess, "Popen", Process)
    return seen


def test_resume_with_devices_checks_the_config_with_the_options_given(
    runner, tmp_path, monkeypatch, restore_threads
):
    """The launching process checks the resumed config as each process will: with
    --threads (and the other options a resume takes) applied."""
    import json

    out = tmp_path / "run"
    args = ["train", *TINY, "--epochs", "1", "--threads", "1", "--out", str(out)]
    assert runner.invoke(main, args).exit_code == 0
    edited = json.loads((out / "config.json").read_text())
    edited["train"]["threads"] = 0
    (out / "config.json").write_text(json.dumps(edited))
    seen = _fake_torchrun(monkeypatch)
    resumed = ["train", "--resume", str(out), "--epochs", "2", "--devices", "2"]
    line = _one_line_error(runner.invoke(main, resumed))
    assert "--threads" in line and "config.json" in line and not seen
    monkeypatch.setattr("sys.argv", ["pyrovae", *resumed, "--threads", "2"])  # what is relaunched
    result = runner.invoke(main, [*resumed, "--threads", "2"])
    assert result.exit_code == 0, result.output
    assert seen["OMP_NUM_THREADS"] == "2"


def test_a_run_without_threads_records_none_and_runs_on_the_callers_count(runner, tmp_path):
    from pyrovae.config import RunConfig

    out = tmp_path / "run"
    result = runner.invoke(main, ["train", *TINY, "--epochs", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert RunConfig.load(out / "config.json").train.threads is None
    assert "threads" not in (out / "config.toml").read_text()


def test_threads_must_be_positive_and_not_huge(runner, tmp_path):
    import json

    for count in ("0", "99999999999"):
        result = runner.invoke(main, ["train", "--threads", count])
        assert result.exit_code != 0 and "--threads" in result.output
        assert "Traceback" not in result.output
    # A count written into a run's config.json is checked on --resume, in one line.
    out = tmp_path / "run"
    assert runner.invoke(main, ["train", *TINY, "--epochs", "1", "--out", str(out)]).exit_code == 0
    config = json.loads((out / "config.json").read_text())
    config["train"]["threads"] = 99999999999
    (out / "config.json").write_text(json.dumps(config))
    result = runner.invoke(main, ["train", "--resume", str(out), "--epochs", "2"])
    assert "--threads must be a whole number from 1 to 1024" in _one_line_error(result)


def test_devices_gives_each_process_the_thread_count(monkeypatch):
    from pyrovae.training import distributed

    seen = _fake_torchrun(monkeypatch)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    distributed.launch(2, ["train"], threads=3)
    assert seen["OMP_NUM_THREADS"] == "3"
    distributed.launch(2, ["train"])  # torchrun's own choice, without its warning
    assert seen["OMP_NUM_THREADS"] == "1"


def test_ctrl_c_before_the_run_exists_does_not_advise_resume(runner, tmp_path, monkeypatch):
    from pyrovae.training import loop as training

    def interrupted(config, device, binary):
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "prepare_data", interrupted)
    result = runner.invoke(main, ["train", *TINY, "--out", str(tmp_path / "run")])
    line = _one_line_error(result)
    assert "nothing was written" in line and "--resume" not in line
    assert not (tmp_path / "run").exists()


def test_a_data_file_given_by_a_relative_path_is_found_from_another_folder(
    runner, tmp_path, monkeypatch
):
    import numpy as np

    from pyrovae.config import RunConfig

    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    (work / "data").mkdir(parents=True)
    elsewhere.mkdir()
    rng = np.random.default_rng(0)
    np.save(work / "data" / "points.npy", (rng.random((40, 6, 6)) < 0.5).astype(np.float32))
    monkeypatch.chdir(work)
    args = ["train", *TINY, "--dataset", "points.npy", "--data-dir", "data", "--epochs", "1"]
    result = runner.invoke(main, [*args, "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    recorded = RunConfig.load(tmp_path / "run" / "config.json").data
    assert recorded.dataset == str(work / "data" / "points.npy")
    assert recorded.data_dir == str(work / "data")
    monkeypatch.chdir(elsewhere)
    metrics = ["--metrics", "elbo", "-n", "4", "--no-progress"]
    result = runner.invoke(main, ["evaluate", "--run", str(tmp_path / "run"), *metrics])
    assert result.exit_code == 0, result.output


def test_a_warning_is_one_line_without_the_source_line(runner, tmp_path):
    import numpy as np

    np.save(tmp_path / "ints.npy", (np.random.default_rng(0).random((40, 6, 6)) < 0.5).astype(int))
    args = ["train", *TINY, "--dataset", str(tmp_path / "ints.npy"), "--epochs", "1"]
    result = runner.invoke(main, [*args, "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    [line] = [line for line in result.output.splitlines() if "integer pixels" in line]
    assert line.startswith("warning: ") and line.endswith("save binary images as bool or float")
    assert "UserWarning" not in result.output and "load.py" not in result.output
    result = runner.invoke(main, [*args, "--verbose", "--out", str(tmp_path / "verbose")])
    [line] = [line for line in result.output.splitlines() if "integer pixels" in line]
    assert line.endswith(")") and "(UserWarning at " in line and "load.py:" in line
    # The handler is the command's only: Python's own is back after it.
    import warnings

    from pyrovae.cli._common import _show_warning

    assert warnings.showwarning is not _show_warning
    for failing in (["--verbose", "--threads", "0"], ["--quiet", "--verbose"], ["--epochs", "x"]):
        assert runner.invoke(main, ["train", *failing]).exit_code != 0
        assert warnings.showwarning is not _show_warning


def test_sigterm_stops_a_training_in_one_line_that_says_what_is_kept(tmp_path):
    """``kill``, ``timeout`` and batch schedulers send SIGTERM: the run stops as for Ctrl-C,
    with its last checkpoint kept and the way to go on, not silently."""
    import signal
    import subprocess
    import sys
    import time

    from pyrovae.files import CHECKPOINT_NAME
    from pyrovae.training.checkpoint import load_checkpoint

    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "pyrovae", "train", *TINY, "--epochs", "100000",
               "--threads", "1", "--out", str(run_dir)]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / CHECKPOINT_NAME).exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert (run_dir / CHECKPOINT_NAME).exists(), "no checkpoint within 120 s"
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    finally:
        process.kill()
    lines = [line for line in output.splitlines() if line.strip()]
    assert process.returncode == 1, output
    assert "Traceback" not in output
    assert lines[-1].startswith("Error: terminated (SIGTERM); the checkpoint of epoch"), output
    assert f"pyrovae train --resume {run_dir}" in lines[-1]
    assert load_checkpoint(run_dir / CHECKPOINT_NAME)["epoch"] >= 1


def test_sigterm_handler_is_set_for_the_block_only():
    import os
    import signal

    from pyrovae.training.run import Terminated, sigterm_stops_as_ctrl_c

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated), sigterm_stops_as_ctrl_c():
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # the handler runs between bytecodes
            pass
    assert signal.getsignal(signal.SIGTERM) == before


@pytest.mark.parametrize(
    "error, message",
    [
        (ConfigError("likelihood 'bernoulli' is declared by both a and b"), "declared by both"),
        (AttributeError("type object 'X' has no attribute 'options'"), "component is broken"),
    ],
)
def test_a_broken_installed_component_is_one_line_not_a_traceback(monkeypatch, error, message):
    # One bad plugin ended every `pyrovae train`, --help too, in a traceback.
    from pyrovae.cli import options

    def broken():
        raise error

    monkeypatch.setattr(options, "component_options", broken)
    result = CliRunner().invoke(main, ["train", "--help"])
    assert (
        result.exit_code == 1 and result.output.startswith("Error: ") and message in result.output
    )
    assert result.output.count("\n") == 1


def test_static_binarization_with_a_likelihood_that_is_not_binary_is_warned_of(runner, tmp_path):
    args = ["train", *TINY, "--epochs", "1", "--likelihood", "gaussian", "--binarize", "static"]
    result = runner.invoke(main, [*args, "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "--binarize static is for binary likelihoods; likelihood gaussian" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--model", "ae", "--beta", "2", "--kl-warmup", "1"], "which an autoencoder (--model ae)"),
     (["--model", "m2", "--labeled", "3"], "--labeled 3 is fewer than the 10 classes: 7 classes")],
)  # fmt: skip
def test_options_that_change_nothing_are_warned_of(runner, tmp_path, args, message):
    result = runner.invoke(main, ["train", *TINY, "--epochs", "1", *args, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert message in result.output
