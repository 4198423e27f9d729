"""Tests of :mod:`pyrovae.data.cifar`: CIFAR-10 read by torchvision from a tiny copy in the
python format written here (``download=False``: nothing is fetched)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from pyrovae.data import cifar
from pyrovae.data.load import load_dataset
from pyrovae.errors import DataError

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_cifar(root: Path, per_batch: int = 3, seed: int = 0) -> dict[str, np.ndarray]:
    """``root/cifar-10-batches-py`` as the python version lays it out: rows of 3072 bytes
    (1024 red, 1024 green, 1024 blue, each row-major), labels as lists."""
    rng = np.random.default_rng(seed)
    folder = root / cifar.FOLDER
    folder.mkdir(parents=True)
    batches: dict[str, np.ndarray] = {}
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, per_batch).tolist()
        with open(folder / name, "wb") as handle:
            pickle.dump({"batch_label": name, "data": data, "labels": labels}, handle)
        batches[name] = data
        batches[name + "_labels"] = np.array(labels)
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({"label_names": CLASSES, "num_cases_per_batch": per_batch}, handle)
    return batches


@pytest.fixture(autouse=True)
def no_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


def test_cifar10_images_labels_and_class_names(tmp_path):
    batches = write_cifar(tmp_path)
    data = load_dataset("cifar10", tmp_path, download=False)
    assert data.data_shape == (3, 32, 32) and data.train.dtype == torch.uint8
    assert (len(data.train), len(data.test)) == (15, 3)
    assert data.classes == tuple(CLASSES)
    train_rows = np.concatenate([batches[f"data_batch_{i}"] for i in range(1, 6)])
    np.testing.assert_array_equal(data.train.reshape(15, -1).numpy(), train_rows)
    np.testing.assert_array_equal(data.test.reshape(3, -1).numpy(), batches["test_batch"])
    # Channel 0 is the first 1024 bytes: red, row-major.
    assert int(data.train[0, 0, 0, 1]) == int(train_rows[0, 1])
    assert int(data.train[0, 2, 31, 31]) == int(train_rows[0, 3071])
    np.testing.assert_array_equal(data.test_labels.numpy(), batches["test_batch_labels"])
    # The folder itself works as --data-dir too, and so does the name CIFAR-10.
    again = load_dataset("CIFAR-10", tmp_path / cifar.FOLDER, download=False)
    assert torch.equal(again.train, data.train)


def test_cifar10_resized_and_grey_on_request(tmp_path):
    write_cifar(tmp_path)
    data = load_dataset("cifar10", tmp_path, download=False, image_size=16, channels=1)
    assert data.data_shape == (1, 16, 16) and data.classes == tuple(CLASSES)


def test_missing_cifar10_says_where_to_put_the_files(tmp_path, monkeypatch):
    with pytest.raises(DataError) as exc_info:
        load_dataset("cifar10", tmp_path, download=False)
    message = str(exc_info.value)
    assert "\n" not in message and "--data-dir" in message and cifar.URL in message
    assert "data_batch_1" in message and "download disabled" in message

    def offline(root: Path) -> None:
        raise OSError("Network is unreachable")

    monkeypatch.setattr(cifar, "_download", offline)
    with pytest.raises(DataError, match=r"download into .* failed \(.*Network is unreachable"):
        load_dataset("cifar10", tmp_path, download=True)


class _Missing:
    """Pickles as a reference to a module that does not exist."""

    def __reduce__(self):
        import importlib

        return (importlib.import_module, ("no_such_module_here",))


def test_a_cifar10_pickle_naming_what_does_not_exist_is_one_line(tmp_path):
    write_cifar(tmp_path)
    with open(tmp_path / cifar.FOLDER / "data_batch_2", "wb") as handle:
        pickle.dump({"data": _Missing(), "labels": [0]}, handle)
    with pytest.raises(DataError) as exc_info:
        load_dataset("cifar10", tmp_path, download=False)
    assert "\n" not in str(exc_info.value) and "could not read CIFAR-10" in str(exc_info.value)


def test_a_truncated_cifar10_file_is_one_line(tmp_path):
    write_cifar(tmp_path)
    batch = tmp_path / cifar.FOLDER / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:100])
    with pytest.raises(DataError) as exc_info:
        load_dataset("cifar10", tmp_path, download=False)
    message = str(exc_info.value)
    assert "\n" not in message and "could not read CIFAR-10" in message
