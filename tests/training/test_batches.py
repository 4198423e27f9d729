"""Tests of :mod:`pyrovae.training.batches`: streamed batches are the batches held in memory."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pyrovae.api import train
from pyrovae.data.load import load_dataset
from pyrovae.training.batches import memory_batches, streamed_batches


@pytest.fixture
def npy(tmp_path):
    path = tmp_path / "pixels.npy"
    np.save(path, np.random.default_rng(0).integers(0, 256, size=(70, 6, 6), dtype=np.uint8))
    return path


@pytest.mark.parametrize("workers", [0, 1])
@pytest.mark.parametrize("shard", [(0, 1), (1, 2)])
def test_streamed_batches_equal_those_in_memory(npy, workers, shard):
    streamed = load_dataset(npy, stream="yes").train
    whole = load_dataset(npy, stream="no").train
    order = torch.randperm(whole.shape[0], generator=torch.Generator().manual_seed(1))
    expected = list(memory_batches(whole, order, 16, shard))
    got = list(streamed_batches(streamed, order, 16, shard, torch.device("cpu"), workers))
    assert [n for _, n in got] == [n for _, n in expected] == [16, 16, 16, 15]
    for (x, _), (y, _) in zip(got, expected, strict=True):
        assert torch.equal(x, y)


@pytest.mark.parametrize("workers", [0, 1])
@pytest.mark.parametrize(
    "change", ["truncated", "deleted", "truncated-fortran", "emptied-fortran", "smaller-fortran"]
)
def test_a_file_changed_under_a_streamed_run_is_one_line(npy, workers, change):
    from pyrovae.errors import DataError

    if change.endswith("fortran"):  # read through a mapping, not pread
        np.save(npy, np.asfortranarray(np.load(npy)))
    streamed = load_dataset(npy, stream="yes").train
    if change.startswith("truncated"):
        npy.write_bytes(npy.read_bytes()[:400])
    elif change.startswith("emptied"):
        npy.write_bytes(b"")
    elif change.startswith("smaller"):  # another, valid file of 10 rows
        np.save(npy, np.asfortranarray(np.zeros((10, 6, 6), np.uint8)))
    else:
        npy.unlink()
    order = torch.arange(70)
    with pytest.raises(DataError) as exc_info:
        list(streamed_batches(streamed, order, 16, (0, 1), torch.device("cpu"), workers))
    message = str(exc_info.value)
    assert "\n" not in message and "Traceback" not in message
    expected = {"deleted": "FileNotFoundError", "smaller-fortran": "changed under the run"}
    assert expected.get(change, "truncated") in message


def test_a_streamed_run_equals_one_in_memory(npy, tmp_path):
    logs: list[str] = []
    options = {"epochs": 2, "latent_dim": 2, "hidden": (16,), "batch_size": 16, "device": "cpu",
               "progress": False, "dataset": str(npy)}  # fmt: skip
    streamed = train(out=tmp_path / "s", stream="yes", log=logs.append, **options)
    whole = train(out=tmp_path / "w", stream="no", log=lambda _: None, **options)
    assert any("streamed from disk" in line and "--stream yes" in line for line in logs)
    assert [row["test_elbo"] for row in streamed.history] == [
        row["test_elbo"] for row in whole.history
    ]
    for key, value in whole.vae.state_dict().items():
        assert torch.equal(value, streamed.vae.state_dict()[key]), key


def test_the_command_line_streams_with_its_own_test_share(npy, tmp_path):
    from click.testing import CliRunner

    from pyrovae.cli import main

    args = ["train", "--dataset", str(npy), "--stream", "yes", "--test-fraction", "0.2",
            "--epochs", "1", "--hidden", "16", "--latent-dim", "2", "--device", "cpu",
            "--no-progress", "--out", str(tmp_path / "run")]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert (
        "56 training and 14 test points" in result.output and "streamed from disk" in result.output
    )
    bad = CliRunner().invoke(main, [*args[:-1], str(tmp_path / "other"), "--stream", "maybe"])
    assert bad.exit_code == 2 and "maybe" in bad.output
