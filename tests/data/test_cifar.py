"""Tests of :mod:`pyrovae.data.cifar`: CIFAR-10 read from a tiny copy in the python format
written here, and downloaded as its archive from a local HTTP server (``http_folder``)."""

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


def write_cifar(
    root: Path, per_batch: int = 3, seed: int = 0, protocol: int = pickle.DEFAULT_PROTOCOL
) -> dict[str, np.ndarray]:
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
            record = {"batch_label": name, "data": data, "labels": labels}
            pickle.dump(record, handle, protocol=protocol)
        batches[name] = data
        batches[name + "_labels"] = np.array(labels)
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({"label_names": CLASSES, "num_cases_per_batch": per_batch}, handle, protocol)
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


def test_running_out_of_memory_reading_cifar10_says_so(tmp_path, monkeypatch):
    """Not "truncated": the files may be fine and the machine short of memory."""
    write_cifar(tmp_path)

    def out_of_memory(path):
        raise MemoryError

    monkeypatch.setattr(cifar, "_load_pickle", out_of_memory)
    with pytest.raises(DataError) as exc_info:
        load_dataset("cifar10", tmp_path, download=False)
    message = str(exc_info.value)
    assert "\n" not in message and "ran out of memory" in message
    assert "truncated" not in message


class _Opener:
    """Pickles as a call of ``io.open(path, "w")``: loading it would create the file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_a_cifar10_pickle_that_would_run_code_is_refused_not_run(tmp_path):
    write_cifar(tmp_path / "data")
    marker = tmp_path / "created_by_the_pickle"
    with open(tmp_path / "data" / cifar.FOLDER / "test_batch", "wb") as handle:
        pickle.dump({"data": _Opener(marker), "labels": [0]}, handle)
    with pytest.raises(DataError) as exc_info:
        load_dataset("cifar10", tmp_path / "data", download=False)
    message = str(exc_info.value)
    assert "\n" not in message and "io.open" in message and "refused" in message
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 5])
def test_cifar10_pickles_of_every_protocol_read_alike(tmp_path, protocol):
    write_cifar(tmp_path / "d")
    expected = load_dataset("cifar10", tmp_path / "d", download=False)
    write_cifar(tmp_path / "p", protocol=protocol)
    if protocol == 2:
        # The genuine files were written by Python 2 with numpy 1.x, which names
        # numpy.core.multiarray (numpy 2 writes numpy._core.multiarray).
        for path in (tmp_path / "p" / cifar.FOLDER).iterdir():
            path.write_bytes(path.read_bytes().replace(b"numpy._core.", b"numpy.core."))
    again = load_dataset("cifar10", tmp_path / "p", download=False)
    assert torch.equal(again.train, expected.train) and torch.equal(again.test, expected.test)
    assert torch.equal(again.test_labels, expected.test_labels)


def _serve_archive(monkeypatch: pytest.MonkeyPatch, http_folder, tmp_path: Path) -> str:
    """The set as torchvision's archive on the local server; returns its MD5."""
    import hashlib
    import tarfile

    from torchvision.datasets import CIFAR10

    folder, url = http_folder
    write_cifar(tmp_path / "unpacked")
    archive = folder / CIFAR10.filename
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "unpacked" / cifar.FOLDER, arcname=cifar.FOLDER)
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    monkeypatch.setattr(CIFAR10, "url", url + CIFAR10.filename)
    monkeypatch.setattr(CIFAR10, "tgz_md5", md5)
    return md5


def test_cifar10_download_fetches_checks_and_reads_the_archive(tmp_path, monkeypatch, http_folder):
    _serve_archive(monkeypatch, http_folder, tmp_path)
    data = load_dataset("cifar10", tmp_path / "fetched", download=True)
    expected = load_dataset("cifar10", tmp_path / "unpacked", download=False)
    assert torch.equal(data.train, expected.train) and torch.equal(data.test, expected.test)
    assert (tmp_path / "fetched" / cifar.FOLDER / "test_batch").is_file()


def test_cifar10_download_with_a_wrong_checksum_is_one_line(tmp_path, monkeypatch, http_folder):
    from torchvision.datasets import CIFAR10

    _serve_archive(monkeypatch, http_folder, tmp_path)
    monkeypatch.setattr(CIFAR10, "tgz_md5", "0" * 32)
    with pytest.raises(DataError) as exc_info:
        load_dataset("cifar10", tmp_path / "fetched", download=True)
    message = str(exc_info.value)
    assert "\n" not in message and "download into" in message
    assert not (tmp_path / "fetched" / cifar.FOLDER).exists()


def _python2_pickle(value) -> bytes:
    """``value`` (a dict, list, str, int or uint8 array) as Python 2's cPickle with numpy
    1.x wrote the genuine files: protocol 2, strings as byte strings (latin-1 on load),
    an array as numpy.core.multiarray._reconstruct and its raw bytes in a string."""
    import struct

    def string(data) -> bytes:
        data = data if isinstance(data, bytes) else data.encode("latin1")
        if len(data) < 256:
            return b"U" + bytes([len(data)]) + data
        return b"T" + struct.pack("<i", len(data)) + data

    def integer(n: int) -> bytes:
        return b"K" + bytes([n]) if 0 <= n < 256 else b"J" + struct.pack("<i", n)

    def body(item) -> bytes:
        if isinstance(item, dict):
            pairs = b"".join(string(k) + body(v) for k, v in item.items())
            return b"}(" + pairs + b"u"
        if isinstance(item, list):
            return b"](" + b"".join(body(v) for v in item) + b"e"
        if isinstance(item, str):
            return string(item)
        if isinstance(item, int):
            return integer(item)
        assert isinstance(item, np.ndarray) and item.dtype == np.uint8
        empty = b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + integer(0)
        empty += b"\x85" + string("b") + b"\x87R"
        shape = b"(" + b"".join(integer(d) for d in item.shape) + b"t"
        dtype = b"cnumpy\ndtype\n" + string("u1") + integer(0) + integer(1) + b"\x87R"
        # numpy 1.x's dtype state: (3, '|', None, None, None, -1, -1, 0).
        dtype += b"(" + integer(3) + string("|") + b"NNN" + integer(-1) * 2 + integer(0) + b"tb"
        state = b"(" + integer(1) + shape + dtype + b"\x89" + string(item.tobytes()) + b"tb"
        return empty + state

    return b"\x80\x02" + body(value) + b"."


def test_cifar10_as_python_2_wrote_it_reads_byte_for_byte(tmp_path):
    batches = write_cifar(tmp_path / "py3")
    folder = tmp_path / "py2" / cifar.FOLDER
    folder.mkdir(parents=True)
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        labels = batches[name + "_labels"].tolist()
        record = {"batch_label": "batch", "data": batches[name], "labels": labels,
                  "filenames": ["a_1.png"] * 3}  # fmt: skip
        (folder / name).write_bytes(_python2_pickle(record))
    meta = {"num_cases_per_batch": 3, "label_names": CLASSES, "num_vis": 3072}
    (folder / "batches.meta").write_bytes(_python2_pickle(meta))
    # Bytes above 127 in the pixels: latin-1 gives them back as they were.
    assert any(byte > 127 for byte in batches["test_batch"].tobytes())
    data = load_dataset("cifar10", tmp_path / "py2", download=False)
    expected = load_dataset("cifar10", tmp_path / "py3", download=False)
    assert torch.equal(data.train, expected.train) and torch.equal(data.test, expected.test)
    assert torch.equal(data.test_labels, expected.test_labels)
    assert data.classes == tuple(CLASSES)


@pytest.mark.parametrize(
    "record, problem",
    [
        ({"data": [[-1] * 3072], "labels": [0]}, "no uint8 array"),
        ({"data": np.zeros((1, 3072), np.uint8), "labels": [float("inf")]}, "not whole numbers"),
        ({"data": np.zeros((1, 10), np.uint8), "labels": [0]}, "rows of 3072 bytes"),
        ({"labels": [0]}, "KeyError"),
        (7, "TypeError"),
    ],
)
def test_a_cifar10_pickle_of_the_wrong_things_is_one_line(tmp_path, record, problem):
    write_cifar(tmp_path)
    with open(tmp_path / cifar.FOLDER / "test_batch", "wb") as handle:
        pickle.dump(record, handle)
    with pytest.raises(DataError) as exc_info:
        load_dataset("cifar10", tmp_path, download=False)
    message = str(exc_info.value)
    assert "\n" not in message and "could not read CIFAR-10" in message and problem in message


@pytest.mark.parametrize("protocol", [2, pickle.DEFAULT_PROTOCOL])
def test_a_cifar10_batch_of_0_images_says_so(tmp_path, protocol):
    # Under protocol 2 the empty array's buffer is pickled as bytes(), which was
    # refused as code that loading would run.
    write_cifar(tmp_path)
    with open(tmp_path / cifar.FOLDER / "test_batch", "wb") as handle:
        empty = {"data": np.zeros((0, 3072), np.uint8), "labels": []}
        pickle.dump(empty, handle, protocol=protocol)
    with pytest.raises(DataError, match="test_batch holds 0 images") as exc_info:
        load_dataset("cifar10", tmp_path, download=False)
    assert "\n" not in str(exc_info.value)


def test_a_cifar10_pickle_asking_for_gigabytes_of_bytes_is_one_line(tmp_path):
    # bytes() is allowed for an empty array's buffer, bytes(N) (N zero bytes) is not.
    write_cifar(tmp_path)
    record = b"\x80\x02c__builtin__\nbytes\nJ\x00\x00\x00@\x85R."  # bytes(2**30)
    (tmp_path / cifar.FOLDER / "test_batch").write_bytes(record)
    with pytest.raises(DataError, match="could not read CIFAR-10") as exc_info:
        load_dataset("cifar10", tmp_path, download=False)
    assert "\n" not in str(exc_info.value) and "bytes() with arguments" in str(exc_info.value)
