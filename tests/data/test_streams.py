"""Tests of :mod:`pyrovae.data.streams`: streamed rows give what reading the file whole gives."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pyrovae.config import DataConfig, RunConfig
from pyrovae.data import streams
from pyrovae.data.dataset import split_indices
from pyrovae.data.load import load_dataset
from pyrovae.data.prepare import prepare_data
from pyrovae.errors import DataError


def assert_same_sets(streamed, whole):
    assert streamed.streamed and not whole.streamed
    assert streamed.data_shape == whole.data_shape and streamed.train.dtype == whole.train.dtype
    assert torch.equal(streamed.train[:], whole.train)
    assert torch.equal(streamed.test, whole.test)
    index = torch.tensor([3, 0, 5, 5])
    assert torch.equal(streamed.train[index], whole.train[index])
    for a, b in (
        (streamed.train_labels, whole.train_labels),
        (streamed.test_labels, whole.test_labels),
    ):
        assert (a is None and b is None) or torch.equal(a, b)


@pytest.mark.parametrize(
    "array",
    [
        np.random.default_rng(0).integers(0, 256, size=(23, 5, 4), dtype=np.uint8),
        np.random.default_rng(1).random((23, 4, 3, 3)).astype(">f8"),  # N x H x W x C, big-endian
        np.random.default_rng(2).random((23, 3, 2, 2)) > 0.5,
    ],
    ids=["uint8-NHW", "float-NHWC", "bool-NCHW"],
)
def test_a_streamed_npy_reads_what_the_whole_file_holds(tmp_path, array):
    path = tmp_path / "a.npy"
    np.save(path, array)
    streamed = load_dataset(path, seed=4, test_fraction=0.2, stream="yes")
    assert_same_sets(streamed, load_dataset(path, seed=4, test_fraction=0.2, stream="no"))
    assert "--stream yes" in streamed.reading


def test_a_fortran_ordered_npy_streams_too(tmp_path):
    array = np.asfortranarray(np.random.default_rng(0).random((9, 1, 3, 2)).astype(np.float32))
    np.save(tmp_path / "f.npy", array)
    assert_same_sets(
        load_dataset(tmp_path / "f.npy", stream="yes"),
        load_dataset(tmp_path / "f.npy", stream="no"),
    )


def test_a_streamed_image_folder_keeps_its_classes(tmp_path):
    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        (tmp_path / "set" / label).mkdir(parents=True)
        for i in range(5):
            pixels = rng.integers(0, 256, size=(4, 6, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "set" / label / f"{i}.png")
    streamed = load_dataset(tmp_path / "set", stream="yes", test_fraction=0.3)
    assert_same_sets(streamed, load_dataset(tmp_path / "set", stream="no", test_fraction=0.3))
    assert streamed.data_shape == (3, 4, 6)


def test_a_streamed_folder_of_mixed_sizes_is_one_line(tmp_path):
    for i, size in enumerate([(4, 4), (4, 4), (5, 4)]):
        Image.fromarray(np.zeros(size, dtype=np.uint8)).save(tmp_path / f"{i}.png")
    config = RunConfig(data=DataConfig(dataset=str(tmp_path), stream="yes", test_fraction=0.0))
    with pytest.raises(DataError, match="differ in size"):
        prepare_data(config, torch.device("cpu"), binary=True)


def test_streamed_values_get_the_checks_of_a_file_read_whole(tmp_path):
    np.save(tmp_path / "big.npy", np.full((10, 3, 3), 2.0))
    config = RunConfig(data=DataConfig(dataset=str(tmp_path / "big.npy"), stream="yes"))
    with pytest.raises(DataError, match=r"outside \[0, 1\]"):
        prepare_data(config, torch.device("cpu"), binary=True)
    # A likelihood that is not binary takes them (its support is checked in training).
    assert prepare_data(config, torch.device("cpu"), binary=False).train.shape[0] == 9
    np.save(tmp_path / "ints.npy", np.full((10, 3, 3), 300, dtype=np.int32))
    config.data.dataset = str(tmp_path / "ints.npy")
    with pytest.raises(DataError, match="integer pixels run from 300 to 300"):
        prepare_data(config, torch.device("cpu"), binary=True)
    np.save(tmp_path / "gray.npy", np.full((10, 3, 3), 0.5, dtype=np.float32))
    config.data.dataset, config.data.binarize = str(tmp_path / "gray.npy"), "none"
    with pytest.raises(DataError, match="exactly 0 or 1"):
        prepare_data(config, torch.device("cpu"), binary=True)
    config.data.binarize = "static"
    with pytest.raises(DataError, match="--binarize dynamic, or --stream no"):
        prepare_data(config, torch.device("cpu"), binary=True)
    # Missing values, which a file read whole takes, are named as such, with the way out.
    gaps = np.full((10, 3, 3), 0.5, dtype=np.float32)
    gaps[:, 1, 1] = np.nan  # in every row: the training rows as the test rows
    np.save(tmp_path / "gaps.npy", gaps)
    config.data.dataset, config.data.binarize = str(tmp_path / "gaps.npy"), "dynamic"
    with pytest.raises(DataError, match=r"missing values \(NaN\).*--stream no") as exc_info:
        prepare_data(config, torch.device("cpu"), binary=True)
    # prepare_data also loads a trained run's data (evaluate, sample): there the file changed.
    assert "the file has changed since" in str(exc_info.value)


def test_bad_values_in_the_test_rows_alone_are_refused_not_wrapped(tmp_path):
    """The test rows of a streamed file are read whole at once: integers beyond 0..255
    there wrapped around as uint8 (300 -> 44, -1 -> 255) before any check saw them."""
    for bad, shown in ((300, "300 to 300"), (-1, "-1 to -1")):
        values = np.random.default_rng(0).integers(0, 256, size=(40, 3, 3))
        _, test_rows = split_indices(40, 0, 0.1)
        values[test_rows.numpy()] = bad  # the training rows are fine
        np.save(tmp_path / "ints.npy", values)
        config = RunConfig(data=DataConfig(dataset=str(tmp_path / "ints.npy"), stream="yes"))
        with pytest.raises(DataError, match=f"its test rows.*integer pixels run from {shown}"):
            prepare_data(config, torch.device("cpu"), binary=True)


def test_odd_files_under_a_npy_name_are_one_line_or_read_whole(tmp_path):
    np.save(tmp_path / "pairs.npy", np.zeros((10, 3, 3), dtype=[("a", "<f4"), ("b", "<f4")]))
    config = RunConfig(data=DataConfig(dataset=str(tmp_path / "pairs.npy"), stream="yes"))
    with pytest.raises(DataError, match="unsupported dtype"):
        prepare_data(config, torch.device("cpu"), binary=True)
    with open(tmp_path / "archive.npy", "wb") as handle:  # an .npz under a .npy name
        np.savez(handle, x=np.random.default_rng(0).random((10, 3, 3)).astype(np.float32))
    config.data.dataset = str(tmp_path / "archive.npy")
    with pytest.raises(DataError, match="is an .npz archive.*cannot be streamed"):
        prepare_data(config, torch.device("cpu"), binary=True)
    config.data.stream = "auto"  # read whole, as the .npz it is
    assert prepare_data(config, torch.device("cpu"), binary=True).train.shape[0] == 9


def test_only_npy_files_and_folders_stream(tmp_path):
    np.savez(tmp_path / "a.npz", x=np.zeros((4, 2, 2), dtype=np.uint8))
    with pytest.raises(DataError, match="--stream yes reads .npy files and image folders"):
        load_dataset(tmp_path / "a.npz", stream="yes")
    assert not load_dataset(tmp_path / "a.npz", stream="auto").streamed


def test_auto_streams_what_would_take_over_a_quarter_of_available_memory(tmp_path, monkeypatch):
    np.save(tmp_path / "a.npy", np.zeros((100, 10, 10), dtype=np.uint8))  # 10 kB of pixels
    monkeypatch.setattr(streams, "available_memory", lambda: 100_000)
    assert not load_dataset(tmp_path / "a.npy", stream="auto").streamed
    monkeypatch.setattr(streams, "available_memory", lambda: 30_000)
    data = load_dataset(tmp_path / "a.npy", stream="auto")
    assert data.streamed and "--stream auto" in data.reading and "over 25%" in data.reading
    monkeypatch.undo()
    assert 0 < streams.available_memory() < 2**50


class _Unreadable:
    """Streamed rows of 8-bit pixels that fail the test if read."""

    shape, dtype = torch.Size([10, 1, 2, 2]), torch.uint8

    def __len__(self):
        return 10

    def __getitem__(self, index):
        raise AssertionError("read")


def test_eight_bit_rows_are_not_read_again_for_a_support_that_holds_every_pixel():
    from torch.distributions import constraints

    from pyrovae.data.dataset import ArrayData
    from pyrovae.data.prepare import check_support

    rows = _Unreadable()
    test = torch.full((2, 1, 2, 2), 255, dtype=torch.uint8)
    data = ArrayData("u8", rows, test)  # type: ignore[arg-type]
    check_support(data, constraints.unit_interval, "continuous-bernoulli")  # k/255 all inside
    with pytest.raises(AssertionError, match="read"):  # 0 is not positive: read and checked
        check_support(data, constraints.positive, "some-likelihood")
