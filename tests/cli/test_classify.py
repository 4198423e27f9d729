"""Conditional and semi-supervised runs from the command line: train on labels from
an .npz (y = -1: unlabelled), classify, sample a class, and the one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from sklearn.datasets import load_digits

import pyrovae
from pyrovae.cli import main
from pyrovae.errors import ConfigError

TINY = ["--hidden", "16", "--latent-dim", "2", "--epochs", "1", "--batch-size", "64"]
N_POINTS, N_LABELLED = 120, 30


def _one_line_error(result, match: str) -> None:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert "Traceback" not in result.output
    assert lines[-1].startswith("Error:") and match in lines[-1], result.output


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Digits as an .npz with x and y, all labelled and partly labelled (y = -1)."""
    digits = load_digits()
    x = (digits.images[:N_POINTS] / 16).astype(np.float32)
    y = digits.target[:N_POINTS].astype(np.int64)
    folder = tmp_path_factory.mktemp("labelled")
    partial = y.copy()
    partial[N_LABELLED:] = -1
    np.savez(folder / "all.npz", x=x, y=y)
    np.savez(folder / "partial.npz", x=x, y=partial)
    np.save(folder / "x.npy", x[:10])
    return folder


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory):
    runner, folder = CliRunner(), tmp_path_factory.mktemp("runs")
    for kind, dataset in (("m2", "partial.npz"), ("cvae", "all.npz")):
        args = ["train", "--model", kind, "--dataset", str(data / dataset), "--out"]
        result = runner.invoke(main, [*args, str(folder / kind), *TINY, "--no-progress"])
        assert result.exit_code == 0, result.output
    return folder


def test_m2_records_its_classes_and_test_accuracy(runs):
    config = json.loads((runs / "m2" / "config.json").read_text())
    assert config["model"]["kind"] == "m2" and config["model"]["n_classes"] == 10
    row = json.loads((runs / "m2" / "metrics.jsonl").read_text().splitlines()[-1])
    assert 0 <= row["test_accuracy"] <= 1 and row["test_accuracy_stderr"] >= 0


def test_evaluate_reports_the_accuracy_of_an_m2_run(runs):
    result = pyrovae.evaluate_run(runs / "m2", k=4, n=12, device="cpu")
    assert result.log_px is not None and result.elbo is None
    assert result.accuracy is not None and result.accuracy_n is not None
    assert any("not computed" in text for text in result.warnings)
    # Asked for nothing an m2 run computes, it computed log p(x) anyway, with a warning.
    with pytest.raises(ConfigError, match="--metrics elbo,active: a --model m2 run computes"):
        pyrovae.evaluate_run(runs / "m2", k=4, n=12, device="cpu", metrics="elbo,active")


def test_classify_round_trip(runs, data, tmp_path):
    runner = CliRunner()
    classes, probs = tmp_path / "y.npy", tmp_path / "p.npy"
    base = ["classify", "--run", str(runs / "m2"), "--input", str(data / "x.npy")]
    result = runner.invoke(main, [*base, "--out", str(classes)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, [*base, "--out", str(probs), "--probabilities"])
    assert result.exit_code == 0, result.output
    y, p = np.load(classes), np.load(probs)
    assert y.shape == (10,) and y.dtype == np.int64 and p.shape == (10, 10)
    np.testing.assert_allclose(p.sum(1), 1, rtol=1e-5)
    assert np.array_equal(p.argmax(1), y)
    api = pyrovae.classify(pyrovae.load_run(runs / "m2"), np.load(data / "x.npy"))
    assert torch.equal(api, torch.from_numpy(y))


def test_sample_label_draws_a_class_of_a_cvae_run(runs, tmp_path):
    runner = CliRunner()
    base = ["sample", "--run", str(runs / "cvae"), "-n", "8", "--out", str(tmp_path / "s.png")]
    result = runner.invoke(main, [*base, "--label", "3", "--save-array", str(tmp_path / "s.npy")])
    assert result.exit_code == 0, result.output
    assert np.load(tmp_path / "s.npy").shape == (8, 1, 8, 8)
    run = pyrovae.load_run(runs / "cvae")
    threes = pyrovae.sample(run, 4, label=3, seed=0)
    assert not torch.equal(threes, pyrovae.sample(run, 4, label=4, seed=0))
    _one_line_error(runner.invoke(main, [*base, "--label", "10"]), "--label must be from 0 to 9")


def test_one_line_errors(runs, data, tmp_path):
    runner = CliRunner()
    out = str(tmp_path / "y.npy")
    cvae = ["classify", "--run", str(runs / "cvae"), "--input", str(data / "x.npy")]
    _one_line_error(runner.invoke(main, [*cvae, "--out", out]), "takes --model m2 runs")
    np.save(tmp_path / "bad.npy", np.zeros((3, 5, 5), np.float32))
    m2 = ["classify", "--run", str(runs / "m2"), "--out", out, "--input"]
    _one_line_error(runner.invoke(main, [*m2, str(tmp_path / "bad.npy")]), "shape (1, 8, 8)")
    np.save(tmp_path / "nan.npy", np.full((3, 8, 8), np.nan, np.float32))
    _one_line_error(runner.invoke(main, [*m2, str(tmp_path / "nan.npy")]), "NaN")
    for dtype in (np.uint8, np.float32):  # uint8 wrote an empty file, with exit 0
        np.save(tmp_path / "none.npy", np.zeros((0, 8, 8), dtype))
        _one_line_error(runner.invoke(main, [*m2, str(tmp_path / "none.npy")]), "0 points")
    train = ["train", *TINY, "--out", str(tmp_path / "r")]
    partial = ["--dataset", str(data / "partial.npz")]
    _one_line_error(runner.invoke(main, [*train, *partial, "--model", "cvae"]), "label for every")
    _one_line_error(runner.invoke(main, [*train, "--labeled", "5"]), "--labeled is for --model m2")
    no_labels = ["--dataset", str(data / "x.npy"), "--model", "m2"]
    _one_line_error(runner.invoke(main, [*train, *no_labels]), "needs labels")
    cvae_iaf = ["--model", "cvae", "--guide", "iaf"]
    _one_line_error(runner.invoke(main, [*train, *cvae_iaf]), "takes the guide normal")
    evaluate = ["evaluate", "--run", str(runs / "cvae")]
    _one_line_error(runner.invoke(main, evaluate), "does not support --model cvae")


@pytest.mark.parametrize("kind", ["m2", "cvae"])
@pytest.mark.parametrize("command", ["encode", "probe", "explore"])
def test_the_latent_space_commands_refuse_a_labelled_run_in_one_line(runs, tmp_path, kind, command):
    out = ["--out", str(tmp_path / ("z.npz" if command == "encode" else "figs"))]
    result = CliRunner().invoke(main, [command, "--run", str(runs / kind), *out])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert lines[-1].startswith(f"Error: {command} does not support --model {kind} runs")


def test_classify_takes_a_npy_file_only(runs, tmp_path):
    (tmp_path / "points.csv").write_text("1,2\n")
    args = ["classify", "--run", str(runs / "m2"), "--input", str(tmp_path / "points.csv"),
            "--out", str(tmp_path / "y.npy")]  # fmt: skip
    _one_line_error(CliRunner().invoke(main, args), "must be a .npy array file")


def test_classify_never_writes_over_its_input_and_writes_npy_only(runs, data, tmp_path):
    # --out x.npy replaced the points with their classes, exit 0; --out y.npz wrote
    # .npy bytes under another name.
    x = tmp_path / "x.npy"
    x.write_bytes((data / "x.npy").read_bytes())
    m2 = ["classify", "--run", str(runs / "m2"), "--input", str(x), "--out"]
    runner = CliRunner()
    _one_line_error(runner.invoke(main, [*m2, str(x)]), "is the file of --input")
    assert x.read_bytes() == (data / "x.npy").read_bytes()
    _one_line_error(runner.invoke(main, [*m2, str(tmp_path / "y.npz")]), "must end in .npy")
