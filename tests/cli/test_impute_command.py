"""``pyrovae impute`` end to end on tiny digits: train on incomplete data, fill in, score."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from pyrovae.cli import main

TINY = ["--hidden", "16", "--latent-dim", "2", "--epochs", "1", "--no-progress"]


def _one_line_error(result) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[-1].startswith("Error:"), result.output
    return lines[-1]


@pytest.fixture(scope="module")
def incomplete(tmp_path_factory):
    """A run trained on 80 digits with 30% of their pixels missing; test points and truth."""
    from sklearn.datasets import load_digits

    folder = tmp_path_factory.mktemp("impute")
    images = (load_digits().images / 16).astype(np.float32)  # (1797, 8, 8)
    rng = np.random.default_rng(0)
    train = np.where(rng.random((80, 8, 8)) < 0.3, np.nan, images[:80]).astype(np.float32)
    np.save(folder / "train.npy", train)
    run = folder / "run"
    args = ["train", "--dataset", str(folder / "train.npy"), "--likelihood", "gaussian"]
    result = CliRunner().invoke(main, [*args, "--out", str(run), *TINY])
    assert result.exit_code == 0, result.output
    truth = images[100:110]
    x = np.where(rng.random(truth.shape) < 0.5, np.nan, truth).astype(np.float32)
    x[:, 0, 0] = truth[:, 0, 0]  # every point keeps an observed value
    np.save(folder / "x.npy", x)
    np.save(folder / "truth.npy", truth)
    return folder, run, x, truth


def test_a_run_trained_on_incomplete_data_records_it(incomplete):
    _, run, _, _ = incomplete
    assert json.loads((run / "config.json").read_text())["model"]["missing"] is True


def test_impute_round_trip(incomplete):
    folder, run, x, truth = incomplete
    out, report = folder / "filled.npy", folder / "report.json"
    args = ["impute", "--run", str(run), "--input", str(folder / "x.npy"), "--out", str(out)]
    extra = ["--draws", "3", "--refine", "sir", "--particles", "20"]
    result = CliRunner().invoke(
        main, [*args, *extra, "--truth", str(folder / "truth.npy"), "--json", str(report)]
    )
    assert result.exit_code == 0, result.output
    filled = np.load(out)
    observed = ~np.isnan(x)
    assert filled.shape == x.shape and np.isfinite(filled).all()
    assert np.array_equal(filled[observed], x[observed])  # observed values kept
    with np.load(folder / "filled-draws.npz") as arrays:
        assert arrays["draws"].shape == (3, *x.shape)
        assert np.array_equal(arrays["mean"], filled)
        assert (arrays["std"][observed] == 0).all() and (arrays["std"][~observed] > 0).all()
        assert np.array_equal(
            arrays["draws"][:, observed], np.broadcast_to(x[observed], (3, observed.sum()))
        )
    score = json.loads(report.read_text())["score"]
    assert score["n_missing"] == int((~observed).sum())
    assert score["rmse"] > 0 and score["rmse_stderr"] > 0
    assert 0 <= score["coverage"] <= 1 and score["coverage_stderr"] >= 0
    assert "RMSE" in result.output


def test_evaluate_scores_incomplete_test_data(incomplete):
    _, run, _, _ = incomplete
    result = CliRunner().invoke(
        main, ["evaluate", "--run", str(run), "-k", "10", "-n", "8", "--metrics", "logpx,elbo"]
    )
    assert result.exit_code == 0, result.output
    assert "nan" not in result.output.lower().replace("nats", "")


def test_bad_input_is_a_one_line_error(incomplete, tmp_path):
    folder, run, x, truth = incomplete
    base = ["impute", "--run", str(run), "--out", str(tmp_path / "f.npy")]
    cases = {
        "shape": (np.zeros((3, 7, 7), np.float32), None),
        "every value missing": (np.full((2, 8, 8), np.nan, np.float32), None),
        "truth holds NaN": (x, np.full_like(truth, np.nan)),
        "differs from the input": (x, truth + 0.5),
    }
    for message, (values, target) in cases.items():
        np.save(tmp_path / "in.npy", values)
        args = [*base, "--input", str(tmp_path / "in.npy")]
        if target is not None:
            np.save(tmp_path / "t.npy", target)
            args += ["--truth", str(tmp_path / "t.npy")]
        assert message in _one_line_error(CliRunner().invoke(main, args))
    # Files numpy reads oddly or not at all: one line each, no traceback.
    (tmp_path / "garbage.npz").write_bytes(b"PK\x03\x04" + b"\x00" * 40)
    np.save(tmp_path / "text.npy", np.array(["a", "b"]))
    np.save(tmp_path / "empty.npy", np.zeros((0, 8, 8), np.float32))
    np.savez(tmp_path / "none.npz")
    (tmp_path / "points.csv").write_text("1,2\n")
    for name, message in (("points.csv", "must be a .npy or .npz array file"),
                          ("garbage.npz", "cannot read a numpy array"),
                          ("text.npy", "expected numbers"), ("empty.npy", "holds no values"),
                          ("none.npz", "holds no arrays")):  # fmt: skip
        args = [*base, "--input", str(tmp_path / name)]
        assert message in _one_line_error(CliRunner().invoke(main, args)), name
    # A long double or big-endian input is read as the numbers it holds; integer pixels
    # (which hold no NaN) as encode and classify read them.
    pixels = np.nan_to_num(x * 255).round()
    for odd in (x.astype(np.longdouble), x.astype(">f4"), pixels.astype(np.int64),
                pixels.astype(np.uint16)):  # fmt: skip
        np.save(tmp_path / "odd.npy", odd)
        result = CliRunner().invoke(main, [*base, "--input", str(tmp_path / "odd.npy")])
        assert result.exit_code == 0, result.output
    np.save(tmp_path / "wide.npy", np.full(x.shape, 300))
    args = [*base, "--input", str(tmp_path / "wide.npy")]
    assert "integers from 300 to 300" in _one_line_error(CliRunner().invoke(main, args))


def test_complete_input_is_returned_with_a_note(incomplete, tmp_path):
    _, run, _, truth = incomplete
    np.save(tmp_path / "in.npy", truth[0])  # one point, no NaN
    out = tmp_path / "f.npz"
    args = ["impute", "--run", str(run), "--input", str(tmp_path / "in.npy"), "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "no missing values" in result.output
    with np.load(out) as arrays:
        assert np.array_equal(arrays["mean"], truth[0])


@pytest.mark.parametrize(
    "outputs, message",
    [
        (["--out", "x.npy"], "--out x.npy is the file of --input: writing it would overwrite"),
        (["--out", "t.npy", "--truth", "t.npy"], "--out t.npy is the file of --truth"),
        (["--out", "f.npy", "--json", "f.npy"], "--json f.npy is the file of --out too"),
        (["--out", "f.npy", "--draws", "2", "--json", "f-draws.npz"], "of the draws' file too"),
    ],
)
def test_no_output_names_an_input_or_another_output(
    incomplete, tmp_path, monkeypatch, outputs, message
):
    # Each wrote over the other with exit 0: the input's NaN (what was missing) were lost.
    _, run, x, truth = incomplete
    monkeypatch.chdir(tmp_path)
    np.save("x.npy", x)
    np.save("t.npy", truth)
    result = CliRunner().invoke(main, ["impute", "--run", str(run), "--input", "x.npy", *outputs])
    assert message in _one_line_error(result)
    assert np.array_equal(np.load("x.npy"), x, equal_nan=True)
    assert np.array_equal(np.load("t.npy"), truth)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["t.npy", "x.npy"]
