"""``pyrovae encode``, ``probe`` and ``explore`` through click's CliRunner, on a tiny
digits run: files written, and one-line errors for bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from pyrovae.cli import main
from pyrovae.runtime import threads


def _run(*args: str):
    # One thread, as on a busy CI machine; the caller's thread count comes back.
    with threads(torch.get_num_threads()):
        return CliRunner().invoke(main, [*args, "--threads", "1"] if "--help" not in args else args)


@pytest.mark.parametrize("command", ["encode", "probe", "explore"])
def test_help(command):
    result = _run(command, "--help")
    assert result.exit_code == 0 and "--run" in result.output


def test_encode_writes_an_npz_of_means_sds_and_labels(tiny_digits_run, tmp_path):
    out = tmp_path / "z.npz"
    result = _run("encode", "--run", str(tiny_digits_run), "--split", "train", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "closed form" in result.output
    with np.load(out) as z:
        assert z["mean"].shape == z["std"].shape == (1437, 2) and z["labels"].shape == (1437,)
        assert (z["std"] > 0).all()


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros((3, 7, 7), np.float32), "shape (1, 7, 7)"),
        (np.full((3, 64), np.nan, np.float32), "NaN"),
        (np.full((3, 8, 8), 3.0, np.float32), "outside [0, 1]"),
    ],
    ids=["shape", "nan", "support"],
)
def test_encode_refuses_bad_input_in_one_line(tiny_digits_run, tmp_path, array, message):
    np.save(tmp_path / "x.npy", array)
    result = _run(
        "encode", "--run", str(tiny_digits_run), "--input", str(tmp_path / "x.npy"),
        "--out", str(tmp_path / "z.npz"),
    )  # fmt: skip
    assert result.exit_code == 1
    assert result.output.startswith("Error:") and message in result.output
    assert result.output.count("\n") == 1 and not (tmp_path / "z.npz").exists()


def test_probe_prints_a_table_and_writes_the_plot_and_json(tiny_digits_run, tmp_path):
    result = _run(
        "probe", "--run", str(tiny_digits_run), "--labels", "50", "--out", str(tmp_path),
        "--json", str(tmp_path / "probe.json"), "--no-progress",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "VAE mean" in result.output and "raw pixels" in result.output and "±" in result.output
    assert (tmp_path / "probe.png").exists() and (tmp_path / "probe.json").exists()


def test_probe_refuses_bad_label_counts(tiny_digits_run):
    result = _run("probe", "--run", str(tiny_digits_run), "--labels", "ten")
    assert result.exit_code == 2 and "'ten'" in result.output


def test_explore_writes_the_labelled_figures(tiny_digits_run, tmp_path):
    result = _run(
        "explore", "--run", str(tiny_digits_run), "--out", str(tmp_path), "--tsne-points", "40",
        "--no-progress",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    names = ["interpolation.png", "traversal.png", "manifold.png", "latent_map.png"]
    for name in names:
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "most active dimensions (average KL (nats))" in result.output
    assert "t-SNE" not in result.output  # --no-progress: no progress lines


def test_encode_never_writes_over_its_input(tiny_digits_run, tmp_path):
    # --out equal to --input replaced the points with their codes, exit 0.
    np.savez(tmp_path / "x.npz", x=np.zeros((3, 8, 8), np.float32))
    before = (tmp_path / "x.npz").read_bytes()
    path = str(tmp_path / "x.npz")
    result = _run("encode", "--run", str(tiny_digits_run), "--input", path, "--out", path)
    assert result.exit_code == 1 and "is the file of --input" in result.output
    assert (tmp_path / "x.npz").read_bytes() == before


def test_no_output_writes_over_the_runs_own_data_file(tmp_path):
    # encode --out, evaluate --json and probe --json named the .npz the run trained on:
    # it was replaced with exit 0, and the run could not be resumed.
    data = tmp_path / "data.npz"
    rng = np.random.default_rng(0)
    np.savez(data, x=rng.random((60, 8, 8)).astype(np.float32), y=rng.integers(0, 3, 60))
    before = data.read_bytes()
    run = str(tmp_path / "run")
    tiny = ["--hidden", "16", "--latent-dim", "2", "--epochs", "1", "--no-progress"]
    assert _run("train", "--dataset", str(data), "--out", run, *tiny).exit_code == 0
    for command in (["encode", "--out"], ["evaluate", "--json"], ["probe", "--json"]):
        result = _run(*command[:1], "--run", run, *command[1:], str(data))
        assert result.exit_code == 1 and "is the file of the run's data" in result.output
    assert data.read_bytes() == before
    result = _run("probe", "--run", run, "--out", str(tmp_path / "p"), "--json",
                  str(tmp_path / "p" / "probe.png"))  # fmt: skip
    assert result.exit_code == 1 and "is the file of the figure too" in result.output
    assert _run("probe", "--run", run, "--out", "").output.startswith("Error: the output folder")
