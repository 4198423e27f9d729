from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from pyrovae.cli import main

TINY = ["--hidden", "32", "--latent-dim", "4", "--batch-size", "256", "--no-progress"]


def _grid_side(n_per_row: int, image: int) -> int:
    # torchvision's make_grid with padding=2; 8x8 images are shown 4x larger.
    return n_per_row * (image + 2) + 2


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def trained(runner, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(main, ["train", "--epochs", "1", "--out", str(out), *TINY])
    assert result.exit_code == 0, result.output
    return out


def _assert_one_line_error(result):
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[-1].startswith("Error:"), result.output


def test_train_prints_epochs_and_run_dir(runner, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(main, ["train", "--epochs", "2", "--out", str(out), *TINY])
    assert result.exit_code == 0, result.output
    assert f"run directory: {out}" in result.output
    assert "epoch   2/2" in result.output and "test ELBO" in result.output
    assert (out / "samples.png").exists()


def test_sample_grid_and_array(runner, trained, tmp_path):
    image = tmp_path / "grid.png"
    array = tmp_path / "x.npy"
    args = ["sample", "-n", "64", "--run", str(trained), "--out", str(image), "--seed", "1"]
    result = runner.invoke(main, [*args, "--save-array", str(array), "--mode", "draw"])
    assert result.exit_code == 0, result.output
    assert str(image) in result.output
    side = _grid_side(8, 32)
    assert Image.open(image).size == (side, side)
    saved = np.load(array)
    assert saved.shape == (64, 1, 8, 8) and set(np.unique(saved)) <= {0.0, 1.0}


def test_reconstruct(runner, trained):
    result = runner.invoke(main, ["reconstruct", "--run", str(trained), "-n", "16"])
    assert result.exit_code == 0, result.output
    # Rows of 8 originals, each above its 8 reconstructions.
    assert Image.open(trained / "reconstructions.png").size == (
        _grid_side(8, 32),
        _grid_side(4, 32),
    )


def test_resume_from_cli(runner, trained):
    result = runner.invoke(
        main, ["train", "--resume", str(trained), "--epochs", "2", "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    assert "resuming" in result.output and "epoch   2/2" in result.output
    result = runner.invoke(main, ["train", "--resume", str(trained), "--beta", "0.5"])
    _assert_one_line_error(result)
    assert "--beta" in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["train", "--dataset", "/nonexistent/data.npy"],
        ["train", "--dataset", "no-such-set"],
        ["train", "--binarize", "none"],  # digits are intensities, bernoulli needs 0/1
        ["train", "--lr", "abc"],
        ["train", "--lr", "-1"],
        ["train", "--epochs", "0"],
        ["train", "--likelihood", "poisson"],
        ["train", "--hidden", "wide"],
        ["train", "--obs-scale", "big", "--likelihood", "gaussian"],
        ["sample", "-n", "0"],
        ["sample", "--out", "grid.gif"],
    ],
)
def test_bad_input_one_line_error_and_no_run_dir(runner, tmp_path, args):
    out = tmp_path / "run"
    extra = ["--out", str(out)] if args[0] == "train" else ["--run", str(tmp_path / "none")]
    if "--out" in args:
        extra = ["--run", str(tmp_path / "none")]
    result = runner.invoke(main, [*args, *extra])
    _assert_one_line_error(result)
    assert not out.exists()


def test_nan_data(runner, tmp_path):
    array = np.random.rand(30, 8, 8).astype(np.float32)
    array[3, 2, 2] = np.nan
    np.save(tmp_path / "nan.npy", array)
    out = tmp_path / "run"
    result = runner.invoke(
        main, ["train", "--dataset", str(tmp_path / "nan.npy"), "--out", str(out)]
    )
    _assert_one_line_error(result)
    assert "NaN" in result.output and not out.exists()


def test_corrupted_and_malicious_checkpoints(runner, trained):
    checkpoint = trained / "checkpoint.pt"
    good = checkpoint.read_bytes()
    checkpoint.write_bytes(good[: len(good) // 3])
    _assert_one_line_error(runner.invoke(main, ["sample", "--run", str(trained)]))
    _assert_one_line_error(runner.invoke(main, ["train", "--resume", str(trained)]))

    class Payload:
        def __reduce__(self):
            return (os.system, ("touch /tmp/pyrovae-pwned",))

    torch.save({"format": "pyrovae-checkpoint", "version": 1, "model": Payload()}, checkpoint)
    result = runner.invoke(main, ["sample", "--run", str(trained)])
    _assert_one_line_error(result)
    assert "refused" in result.output
    assert not os.path.exists("/tmp/pyrovae-pwned")


def test_existing_run_dir_refused(runner, trained):
    result = runner.invoke(main, ["train", "--out", str(trained), *TINY])
    _assert_one_line_error(result)
    assert "--resume" in result.output


def test_help_is_instant_and_lists_registries(runner):
    result = runner.invoke(main, ["train", "--help"])
    assert result.exit_code == 0
    assert "bernoulli" in result.output and "continuous-bernoulli" in result.output


def test_installed_command_end_to_end(tmp_path):
    exe = shutil.which("pyrovae")
    if exe is None:
        pytest.skip("the pyrovae console script is not installed")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    subprocess.run([exe, "train", "--epochs", "1", *TINY], cwd=tmp_path, check=True, env=env,
                   capture_output=True)  # fmt: skip
    result = subprocess.run([exe, "sample", "-n", "64"], cwd=tmp_path, env=env,
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert str(run_dir.relative_to(tmp_path) / "samples.png") in result.stdout
    module = subprocess.run([sys.executable, "-m", "pyrovae", "--help"], capture_output=True,
                            text=True)  # fmt: skip
    assert module.returncode == 0 and "train" in module.stdout


def test_bad_option_with_devices_fails_once_before_launching(runner, tmp_path):
    result = runner.invoke(main, ["train", "--devices", "2", "--beta", "0", "--out", str(tmp_path)])
    _assert_one_line_error(result)
    assert result.output.count("Error:") == 1 and "--beta" in result.output
