"""``train --corrupt/--sparsity/--model ae`` and ``reconstruct --corrupt`` from the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from sklearn.datasets import load_digits

from pyrovae.cli import main

TINY = ["--hidden", "16", "--latent-dim", "2", "--epochs", "1", "--batch-size", "256"]


def _assert_one_line_error(result, *words):
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.output
    for word in words:
        assert word in lines[0]


@pytest.mark.parametrize(
    ("options", "word"),
    [
        (["--corrupt", "mask:2"], "[0, 1)"),
        (["--corrupt", "blur:1"], "mask:P, gaussian:SIGMA or salt-pepper:P"),
        (["--corrupt", "gaussian:-1"], "positive"),
        (["--sparsity", "2"], "--sparsity"),
        (["--sparsity", "0.05", "--sparsity-weight", "-1"], "--sparsity-weight"),
        (["--model", "ae", "--prior", "vamp"], "no prior"),
    ],
)
def test_bad_options_are_one_line_errors_before_anything_is_written(tmp_path, options, word):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "--out", str(out), *TINY, *options])
    _assert_one_line_error(result, word)
    assert not out.exists()


@pytest.fixture(scope="module")
def denoising_ae(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ae")
    data = folder / "digits.npy"  # 80 digits: seconds, not the 1797
    np.save(data, (load_digits().images[:80, None] / 16).astype(np.float32))
    out = folder / "run"
    command = ["train", "--model", "ae", "--corrupt", "mask:0.3", "--sparsity", "0.05"]
    command += ["--dataset", str(data), "--test-fraction", "0.25", "--no-progress"]
    result = CliRunner().invoke(main, [*command, "--out", str(out), *TINY])
    assert result.exit_code == 0, result.output
    return out


def test_the_run_records_the_corruption_and_reports_the_sparsity_apart(denoising_ae):
    config = json.loads((denoising_ae / "config.json").read_text())
    assert config["model"]["kind"] == "ae"
    assert config["train"]["corrupt"] == "mask:0.3" and config["train"]["sparsity"] == 0.05
    row = json.loads((denoising_ae / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["train_sparsity_kl"] > 0 and row["test_kl"] == 0.0
    assert not (denoising_ae / "samples.png").exists()  # no prior to sample from


def test_an_autoencoder_cannot_sample_give_log_px_or_be_diagnosed(denoising_ae):
    runner = CliRunner()
    _assert_one_line_error(runner.invoke(main, ["sample", "--run", str(denoising_ae)]), "prior")
    result = runner.invoke(main, ["evaluate", "--run", str(denoising_ae), "--metrics", "logpx"])
    _assert_one_line_error(result, "logpx")
    result = runner.invoke(main, ["diagnose", "--run", str(denoising_ae)])
    _assert_one_line_error(result, "prior")
    json_path = denoising_ae.parent / "ae-evaluation.json"
    command = ["evaluate", "--run", str(denoising_ae), "-n", "20", "--json", str(json_path)]
    result = runner.invoke(main, command)
    assert result.exit_code == 0, result.output
    assert "reconstruction" in result.output and "KL" not in result.output
    figures = json.loads(json_path.read_text())
    assert figures["has_prior"] is False and figures["elbo"] == figures["recon"]
    assert figures["kl"] is None and figures["elbo_draws"] is None  # no KL term, no draws of z


def test_reconstruct_corrupt_draws_three_labelled_rows(denoising_ae, tmp_path):
    out = tmp_path / "denoised.png"
    command = ["reconstruct", "--run", str(denoising_ae), "--corrupt", "salt-pepper:0.2"]
    result = CliRunner().invoke(main, [*command, "-n", "5", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "corrupted (salt-pepper:0.2) and reconstructed" in result.output
    with Image.open(out) as image:
        assert image.size[0] > 0
    bad = CliRunner().invoke(main, [*command[:4], "blur:1", "--out", str(out)])
    _assert_one_line_error(bad, "blur:1")


def test_salt_pepper_on_standardized_data_sets_the_test_sets_ends(tmp_path):
    # In training (the step's corruption) and in reconstruct --corrupt alike; 0 and 1
    # are ordinary values of such data.
    import torch

    import pyrovae
    from pyrovae.inference.objectives import make_objective
    from pyrovae.training.labelled import make_step
    from pyrovae.training.step import make_optimizer

    x = np.random.default_rng(0).normal(0.0, 2.0, (60, 1, 8, 8)).astype(np.float32)
    pyrovae.train(data=x, likelihood="gaussian", corrupt="salt-pepper:0.5", hidden=(8,),
                  latent_dim=2, epochs=1, device="cpu", out=tmp_path / "run", progress=False,
                  log=lambda line: None)  # fmt: skip
    run = pyrovae.load_run(tmp_path / "run")
    lo, hi = run.config.data.display_range
    assert lo < -2 and hi > 2
    vae, config = run.vae, run.config
    optimizer = make_optimizer(vae.parameters(), lr=1e-3)
    data = run.data(x)
    step = make_step(config, vae, make_objective(config.train), optimizer, data, binarize=False)
    assert (step.corruption.low, step.corruption.high) == (lo, hi)
    result = pyrovae.reconstruct_corrupted(run, 4, corrupt="salt-pepper:0.5", data=x, seed=0)
    hit = result.corrupted != result.clean
    values = set(result.corrupted[hit].tolist())
    assert hit.any() and values <= {lo, hi} and len(values) == 2
    assert torch.equal(result.corrupted[~hit], result.clean[~hit])
