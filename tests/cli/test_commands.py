from __future__ import annotations

import json
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
from pyrovae.model.guides import GUIDES, Guide
from pyrovae.reports.figures import GROUP_GAP, MIN_DISPLAY_SIZE

TINY = ["--hidden", "32", "--latent-dim", "4", "--batch-size", "256", "--no-progress"]


def _grid_side(n_per_row: int, image: int) -> int:
    # torchvision's make_grid with padding=2; 8x8 images are shown 8x larger.
    return n_per_row * (image + 2) + 2


#: The side of a digit's tile in grids (8x8 enlarged to 64x64).
TILE = MIN_DISPLAY_SIZE


def _assert_reconstruction_figure(path, n: int) -> None:
    """Groups of 8 images, each a row of originals above a row of reconstructions, the
    groups GROUP_GAP apart, with the rows' labels in a margin on the left."""
    width, height = Image.open(path).size
    groups = -(-n // 8)
    assert height == groups * _grid_side(2, TILE) + (groups - 1) * GROUP_GAP
    assert width > _grid_side(min(n, 8), TILE)  # the grid and the labels' margin


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
    side = _grid_side(8, TILE)
    assert Image.open(image).size == (side, side)
    saved = np.load(array)
    assert saved.shape == (64, 1, 8, 8) and set(np.unique(saved)) <= {0.0, 1.0}


def test_reconstruct(runner, trained):
    result = runner.invoke(main, ["reconstruct", "--run", str(trained), "-n", "16"])
    assert result.exit_code == 0, result.output
    # Rows of 8 originals, each above its 8 reconstructions.
    _assert_reconstruction_figure(trained / "reconstructions.png", 16)


@pytest.mark.parametrize(
    ("args", "shown", "reason"),
    [
        (["-n", "1000"], 360, "(1000 asked; the test split holds 360)"),
        (["-n", "100000", "--split", "train"], 1437, "(100000 asked; the train split holds 1437)"),
        (["-n", "13"], 13, None),
    ],
)
def test_reconstruct_says_how_many_it_wrote(runner, trained, args, shown, reason):
    result = runner.invoke(main, ["reconstruct", "--run", str(trained), "--no-progress", *args])
    assert result.exit_code == 0, result.output
    split = "train" if "train" in args else "test"
    path = trained / "reconstructions.png"
    assert result.output == (
        f"wrote {shown} {split} images and their reconstructions to {path}"
        + (f" {reason}" if reason else "")
        + "\n"
    )
    # The image holds exactly that many pairs: groups of 8, two rows each.
    _assert_reconstruction_figure(path, shown)


def test_grids_hold_at_most_max_grid_tiles(runner, trained, tmp_path, monkeypatch):
    monkeypatch.setattr("pyrovae.reports.figures.MAX_GRID_TILES", 16)
    result = runner.invoke(main, ["reconstruct", "--run", str(trained), "-n", "20"])
    assert result.exit_code == 0, result.output
    assert "wrote 8 test images" in result.output and "a grid shows at most 8" in result.output
    grid, array = tmp_path / "grid.png", tmp_path / "all.npy"
    args = ["sample", "--run", str(trained), "-n", "20", "--out", str(grid)]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"wrote 16 samples to {grid} (a grid shows at most 16;")
    assert Image.open(grid).size == (_grid_side(4, TILE), _grid_side(4, TILE))
    result = runner.invoke(main, [*args, "--save-array", str(array)])
    assert result.exit_code == 0, result.output
    assert f"wrote the first 16 of 20 samples to {grid}" in result.output
    assert np.load(array).shape == (20, 1, 8, 8)


def test_sample_grid_of_any_n_is_rectangular(runner, trained, tmp_path):
    grid = tmp_path / "ten.png"
    args = ["sample", "--run", str(trained), "-n", "10", "--out", str(grid), "--no-progress"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert result.output == f"wrote 10 samples to {grid}\n"
    assert Image.open(grid).size == (_grid_side(4, TILE), _grid_side(3, TILE))


def test_save_array_is_written_at_exactly_the_printed_path(runner, trained, tmp_path):
    array = tmp_path / "no-suffix"
    target = tmp_path / "target.bin"
    link = tmp_path / "link.npy"
    link.symlink_to(target)
    for path in (array, link):
        args = ["sample", "--run", str(trained), "-n", "3", "--save-array", str(path)]
        result = runner.invoke(main, args)
        assert result.exit_code == 0, result.output
        assert f"wrote array (3, 1, 8, 8) to {path}\n" in result.output
        assert np.load(path).shape == (3, 1, 8, 8)
    assert not (tmp_path / "no-suffix.npy").exists() and link.is_symlink()
    assert np.load(target).shape == (3, 1, 8, 8)  # written through the symlink


def test_out_through_a_symlink_keeps_the_link(runner, trained, tmp_path):
    target = tmp_path / "real.png"
    link = tmp_path / "link.png"
    link.symlink_to(target)
    result = runner.invoke(main, ["sample", "--run", str(trained), "-n", "4", "--out", str(link)])
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and Image.open(target).size == (_grid_side(2, TILE),) * 2


def _blocked_paths(tmp_path):
    regular = tmp_path / "a-file"
    regular.write_text("x")
    paths = {
        "under a regular file": (str(regular / "x.png"), str(regular / "x.npy")),
        "missing, cannot be created": ("/proc/pyrovae-missing/x.png", "/proc/pyrovae-missing/x"),
        "a folder": (str(tmp_path / "dir.png"), str(tmp_path)),
    }
    (tmp_path / "dir.png").mkdir()
    if os.path.isdir("/sys"):  # exists, but no file can be made in it, even by root
        paths["a folder that is not writable"] = ("/sys/pyrovae-x.png", "/sys/pyrovae-x.npy")
    if os.path.exists("/dev/full"):
        paths["a device"] = (None, "/dev/full")
    return paths


@pytest.mark.parametrize("which", ["--out", "--save-array"])
def test_unwritable_outputs_fail_before_the_run_is_loaded(runner, tmp_path, which):
    missing_run = str(tmp_path / "no-such-run")  # loading it would fail with another message
    for case, (image, array) in _blocked_paths(tmp_path).items():
        path = image if which == "--out" else array
        if path is None:
            continue
        for command in ("sample", "reconstruct") if which == "--out" else ("sample",):
            result = runner.invoke(main, [command, "--run", missing_run, which, path])
            _assert_one_line_error(result)
            assert path.split("/")[-2] in result.output or path in result.output, (
                case,
                result.output,
            )
            assert "wrote" not in result.output and "no run directory" not in result.output, case


def test_unwritable_outputs_print_nothing_as_written(runner, trained, tmp_path):
    image = tmp_path / "grid.png"
    result = runner.invoke(
        main, ["sample", "--run", str(trained), "--out", str(image), "--save-array", "/dev/full"]
    )
    _assert_one_line_error(result)
    assert "not a regular file" in result.output and "wrote" not in result.output
    assert not image.exists() and not os.path.isfile("/dev/full")
    same = tmp_path / "same.png"
    result = runner.invoke(main, ["sample", "--run", str(trained), "--out", str(same),
                                  "--save-array", str(same)])  # fmt: skip
    _assert_one_line_error(result)
    assert "grid's file" in result.output and not same.exists()
    default = trained / "samples.png"
    before = default.read_bytes()
    result = runner.invoke(main, ["sample", "--run", str(trained), "--save-array", str(default)])
    _assert_one_line_error(result)
    assert default.read_bytes() == before


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "-1", "0", "1e-9", "1e9"])
def test_bad_temperature_is_one_line_before_loading(runner, tmp_path, value):
    result = runner.invoke(
        main, ["sample", "--run", str(tmp_path / "none"), f"--temperature={value}"]
    )
    _assert_one_line_error(result)
    assert "--temperature must be a number from 1e-06 to 100" in result.output


class _LaplaceGuide(Guide):
    """A newly registered guide that does not declare tempering."""

    name = "laplace"

    def __init__(self, context, n_features):
        super().__init__(context, n_features)
        self.loc = torch.nn.Linear(n_features, context.n_latent)

    def forward(self, h):
        import pyro.distributions as dist

        return dist.Laplace(self.loc(h), 1.0).to_event(1)


@pytest.fixture
def laplace_guide():
    GUIDES.register(_LaplaceGuide)
    yield
    GUIDES.unregister(_LaplaceGuide.name)


def test_temperature_on_a_prior_that_cannot_be_tempered(runner, tmp_path, laplace_guide):
    out = tmp_path / "run"
    options = ["--guide", "laplace", "--prior", "vamp", "--prior-components", "3"]
    result = runner.invoke(main, ["train", "--epochs", "1", "--out", str(out), *TINY, *options])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["sample", "--run", str(out), "--temperature", "0.5"])
    _assert_one_line_error(result)
    assert (
        "prior 'vamp' (with guide 'laplace') cannot be sampled at a temperature other than 1"
        in (result.output)
    )
    result = runner.invoke(main, ["sample", "--run", str(out), "-n", "4"])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("command", ["sample", "reconstruct"])
def test_generators_accept_no_progress_and_bounded_seeds(runner, trained, command):
    result = runner.invoke(main, [command, "--run", str(trained), "--no-progress", "--seed", "0"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, [command, "--run", str(trained), "--seed", str(2**64)])
    _assert_one_line_error(result)
    assert "--seed" in result.output


def test_top_level_cli_imports_no_torch():
    code = "import sys, pyrovae.cli; print(sorted({'torch', 'pyro', 'numpy'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stderr


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


def test_a_gaussian_trains_on_a_float_file_of_any_range(runner, tmp_path):
    # Standardized data (here around 10): a Gaussian likelihood takes them; a continuous
    # Bernoulli, whose support is [0, 1], refuses them in one line, before any run folder.
    values = np.random.default_rng(0).normal(10.0, 3.0, (40, 8, 8)).astype(np.float32)
    np.save(tmp_path / "z.npy", values)
    common = ["train", "--dataset", str(tmp_path / "z.npy"), "--epochs", "1", "--no-progress"]
    out = tmp_path / "gaussian"
    result = runner.invoke(main, [*common, "--likelihood", "gaussian", "--out", str(out)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["evaluate", "--run", str(out), "-k", "5", "--metrics", "logpx"])
    assert result.exit_code == 0, result.output
    # Its figures are drawn on the test set's range (the points the run held out).
    lo, hi = json.loads((out / "config.json").read_text())["data"]["display_range"]
    assert values.min() <= lo < hi <= values.max() and lo < 5 and hi > 15
    out = tmp_path / "cb"
    result = runner.invoke(
        main, [*common, "--likelihood", "continuous-bernoulli", "--out", str(out)]
    )
    _assert_one_line_error(result)
    assert "outside the support of likelihood continuous-bernoulli" in result.output
    assert not out.exists()


@pytest.mark.parametrize("model", ["cvae", "m2"])
def test_labelled_models_check_a_mixtures_support(runner, tmp_path, model):
    # p(x) of cvae and m2 is a mixture over the labels: its support is unwrapped to the
    # values' (it ended in a traceback before any non-binary likelihood could train).
    rng = np.random.default_rng(0)
    x, y = rng.random((60, 8, 8)).astype(np.float32), rng.integers(0, 3, 60)
    np.savez(tmp_path / "l.npz", x=x, y=y)
    common = ["train", "--dataset", str(tmp_path / "l.npz"), "--model", model,
              "--epochs", "1", "--no-progress"]  # fmt: skip
    for likelihood in ("gaussian", "continuous-bernoulli"):
        out = tmp_path / likelihood
        result = runner.invoke(main, [*common, "--likelihood", likelihood, "--out", str(out)])
        assert result.exit_code == 0, result.output
    np.savez(tmp_path / "l.npz", x=x * 3, y=y)
    out = tmp_path / "outside"
    result = runner.invoke(
        main, [*common, "--likelihood", "continuous-bernoulli", "--out", str(out)]
    )
    _assert_one_line_error(result)
    assert "outside the support" in result.output and not out.exists()
    # A prior built on q(z|x) has none to build on (q(z|x,y) replaces it).
    np.savez(tmp_path / "l.npz", x=x, y=y)
    out = tmp_path / "vamp"
    result = runner.invoke(main, [*common, "--prior", "vamp", "--out", str(out)])
    _assert_one_line_error(result)
    assert "cannot take the prior 'vamp'" in result.output and not out.exists()


def test_a_vampprior_in_the_unit_interval_refuses_data_outside_it(runner, tmp_path):
    # Its pseudo-inputs could not resemble standardized data; the linear ones can.
    values = np.random.default_rng(0).normal(0.0, 1.0, (40, 8, 8)).astype(np.float32)
    np.save(tmp_path / "z.npy", values)
    common = ["train", "--dataset", str(tmp_path / "z.npy"), "--likelihood", "gaussian",
              "--prior", "vamp", "--prior-components", "4", "--epochs", "1",
              "--no-progress"]  # fmt: skip
    out = tmp_path / "sigmoid"
    result = runner.invoke(main, [*common, "--out", str(out)])
    _assert_one_line_error(result)
    assert "--pseudo-inputs linear" in result.output and not out.exists()
    out = tmp_path / "linear"
    result = runner.invoke(main, [*common, "--pseudo-inputs", "linear", "--out", str(out)])
    assert result.exit_code == 0, result.output
    # A run trained before the check resumes as it was (its options cannot change then).
    np.save(tmp_path / "z.npy", np.clip(values, 0, 1))
    out = tmp_path / "before"
    assert runner.invoke(main, [*common, "--out", str(out)]).exit_code == 0
    np.save(tmp_path / "z.npy", values)
    result = runner.invoke(main, ["train", "--resume", str(out), "--epochs", "2"])
    assert result.exit_code == 0, result.output


def test_the_likelihoods_support_is_checked_on_every_split_and_on_reloading(runner, tmp_path):
    # A continuous Bernoulli needs [0, 1]: a bad point among those --val-fraction holds
    # out is refused before training; a file changed after training, by the commands
    # that read it again (they ended in tracebacks from torch's validation).
    from pyrovae.data.dataset import split_indices

    values = np.random.default_rng(0).random((100, 8, 8)).astype(np.float32)
    np.save(tmp_path / "u.npy", values)
    common = ["train", "--dataset", str(tmp_path / "u.npy"), "--likelihood",
              "continuous-bernoulli", "--epochs", "1", "--no-progress"]  # fmt: skip
    trained = tmp_path / "trained"
    assert runner.invoke(main, [*common, "--out", str(trained)]).exit_code == 0
    # The training rows after the 10% test split, and of those the validation's.
    train_index, _ = split_indices(100, 0, 0.1)
    _, held = split_indices(len(train_index), 0, 0.2)
    values[train_index[held[0]], 0, 0] = 1.5
    np.save(tmp_path / "u.npy", values)
    out = tmp_path / "held"
    result = runner.invoke(main, [*common, "--val-fraction", "0.2", "--out", str(out)])
    _assert_one_line_error(result)
    assert "the validation set" in result.output and "continuous-bernoulli" in result.output
    assert not out.exists()
    values[:, 0, 0] = 1.5
    np.save(tmp_path / "u.npy", values)
    for command in (["evaluate", "-k", "2"], ["encode", "--out", str(tmp_path / "z.npz")]):
        result = runner.invoke(main, [command[0], "--run", str(trained), *command[1:]])
        _assert_one_line_error(result)
        assert "outside the support of likelihood continuous-bernoulli" in result.output


def test_a_point_with_every_value_missing(runner, tmp_path):
    # NaN marks a missing value (tests/cli/test_impute.py trains on such data); a point
    # with none observed is refused.
    array = np.random.rand(30, 8, 8).astype(np.float32)
    array[3] = np.nan
    np.save(tmp_path / "nan.npy", array)
    out = tmp_path / "run"
    result = runner.invoke(
        main, ["train", "--dataset", str(tmp_path / "nan.npy"), "--out", str(out)]
    )
    _assert_one_line_error(result)
    assert "every value missing" in result.output and not out.exists()


def test_a_malformed_display_range_is_one_line(runner, trained, tmp_path):
    run = tmp_path / "malformed"
    shutil.copytree(trained, run)
    config = json.loads((run / "config.json").read_text())
    for bad in ([1.0], "abc", [2.0, 1.0]):
        config["data"]["display_range"] = bad
        (run / "config.json").write_text(json.dumps(config))
        result = runner.invoke(main, ["sample", "--run", str(run), "-n", "4"])
        _assert_one_line_error(result)
        # Text is refused by its type ("must be of type list[float] | None").
        assert "data.display_range must be " in result.output


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


@pytest.mark.parametrize(
    "argv, names",
    [
        (["sample", "-n", "0"], ["'-n'", "pyrovae sample --help"]),
        (["train", "--likelihood", "nope"], ["'nope'", "pyrovae train --help"]),
        (["components", "--threads", "1"], ["--threads", "pyrovae components --help"]),
        (["train", "--quiet", "--verbose"], ["not both", "pyrovae train --help"]),
        (["nope"], ["'nope'", "pyrovae --help"]),
    ],
)
def test_a_usage_error_is_one_error_line_with_exit_status_2(argv, names):
    result = CliRunner().invoke(main, argv, prog_name="pyrovae")
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert all(name in lines[0] for name in names), lines[0]


def test_pyrovae_alone_still_shows_the_help():
    result = CliRunner().invoke(main, [])
    assert "Commands:" in result.output and "Error" not in result.output


def test_ctrl_c_in_a_command_is_one_error_line(runner, monkeypatch):
    # click printed a bare "Aborted!" after an empty line.
    import pyrovae.api

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pyrovae.api, "evaluate_run", interrupted)
    result = runner.invoke(main, ["evaluate", "--no-progress"])
    assert result.exit_code == 1
    assert result.output == "Error: interrupted (Ctrl-C); no file was left half-written\n"


def test_training_goes_on_when_its_reader_closes_the_pipe(tmp_path):
    """``pyrovae train | head -1``: the run finishes, with exit 0, and says why on stderr."""
    process = subprocess.Popen(
        [sys.executable, "-m", "pyrovae", "train", "--epochs", "6", *TINY, "--out", "run"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None and process.stderr is not None
    assert process.stdout.readline().startswith("run directory:")
    process.stdout.close()  # the reader is gone, as head's after one line
    stderr = process.stderr.read()
    assert process.wait(timeout=120) == 0, stderr
    assert "standard output was closed; training goes on" in stderr
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 6
    assert (tmp_path / "run" / "samples.png").exists()


def test_training_goes_on_when_the_pipe_of_both_its_streams_closes(tmp_path):
    """``pyrovae train 2>&1 | head -1``: the note on standard error meets the same closed
    pipe; the run still finishes, with exit 0."""
    process = subprocess.Popen(
        [sys.executable, "-m", "pyrovae", "train", "--epochs", "4", *TINY, "--out", "run"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    assert process.stdout.readline().startswith("run directory:")
    process.stdout.close()
    assert process.wait(timeout=120) == 0
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 4
    assert (tmp_path / "run" / "samples.png").exists()


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError(
            "[enforce fail at alloc_cpu.cpp:127] data. DefaultCPUAllocator: not enough memory: "
            "you tried to allocate 102400000000 bytes."
        ),
        MemoryError(),
    ],
)
def test_running_out_of_memory_in_any_command_is_one_line(monkeypatch, error):
    from pyrovae.model import catalog

    def allocate(*args, **kwargs):
        raise error

    monkeypatch.setattr(catalog, "catalog_text", allocate)
    result = CliRunner().invoke(main, ["components"])
    _assert_one_line_error(result)
    assert "pyrovae components ran out of memory" in result.output


def test_other_runtime_errors_are_not_called_out_of_memory(monkeypatch):
    from pyrovae.model import catalog

    def fail(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(catalog, "catalog_text", fail)
    result = CliRunner().invoke(main, ["components"])
    assert isinstance(result.exception, RuntimeError) and "memory" not in result.output
