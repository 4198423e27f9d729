"""Tests of :mod:`pyrovae.data`: loading, splitting and validating image sets.

MNIST-style sets are built from tiny IDX files written here; the download path
fetches them from a local HTTP server (``http_folder``), nothing from the network.
"""

from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pyrovae.data import idx
from pyrovae.data import pixels as pixels_module
from pyrovae.data.dataset import ArrayData, split_indices
from pyrovae.data.load import DATASETS, load_dataset
from pyrovae.data.pixels import check_finite_unit_interval, is_binary, to_unit_float
from pyrovae.errors import ConfigError, DataError

IDX_NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def assert_one_line(exc_info: pytest.ExceptionInfo[DataError]) -> str:
    message = str(exc_info.value)
    assert message and "\n" not in message
    return message


@pytest.fixture(autouse=True)
def no_system_or_cache_data(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Keep the machine's own copies (Debian package, user cache) out of the tests.
    monkeypatch.setattr(idx, "_SYSTEM_DIRS", {})
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


# --------------------------------------------------------------------------- #
# IDX helpers
# --------------------------------------------------------------------------- #


def test_a_long_double_file_is_read_as_its_numbers(tmp_path):
    from pyrovae.data.arrays import read_array_file

    np.save(tmp_path / "ld.npy", np.full((3, 4, 4), 0.25, dtype=np.longdouble))
    [(images, labels)] = read_array_file(tmp_path / "ld.npy")
    assert images.dtype == torch.float32 and bool((images == 0.25).all()) and labels is None


def idx_labels(labels: np.ndarray) -> bytes:
    return struct.pack(">II", 0x00000801, len(labels)) + labels.astype(np.uint8).tobytes()


def assert_matches_idx(data: ArrayData, arrays: dict[str, np.ndarray]) -> None:
    assert data.train.dtype == torch.uint8 and data.test.dtype == torch.uint8
    assert data.data_shape == (1, 28, 28)
    np.testing.assert_array_equal(data.train[:, 0].numpy(), arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(data.test[:, 0].numpy(), arrays["t10k-images-idx3-ubyte"])
    assert data.train_labels is not None and data.test_labels is not None
    assert data.train_labels.dtype == torch.int64
    np.testing.assert_array_equal(data.train_labels.numpy(), arrays["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(data.test_labels.numpy(), arrays["t10k-labels-idx1-ubyte"])
    assert data.classes is not None and len(data.classes) == 10
    if data.name == "fashion-mnist":
        assert data.classes[0] == "T-shirt/top" and data.classes[9] == "Ankle boot"


# --------------------------------------------------------------------------- #
# digits
# --------------------------------------------------------------------------- #


def test_digits_shapes_dtype_range_and_labels() -> None:
    data = load_dataset("digits")
    assert data.name == "digits"
    assert data.train.shape == (1437, 1, 8, 8) and data.test.shape == (360, 1, 8, 8)
    assert data.train.dtype == torch.float32 and data.data_shape == (1, 8, 8)
    check_finite_unit_interval(data.train, "digits train")
    assert float(data.train.max()) == 1.0 and float(data.train.min()) == 0.0
    # 0..16 divided by 16 is exact in float32.
    assert torch.equal(data.train * 16, (data.train * 16).round())
    assert data.train_labels is not None and data.test_labels is not None
    assert data.train_labels.dtype == torch.int64 and data.train_labels.shape == (1437,)
    # Stratified: every class is in the test set in roughly its share.
    counts = torch.bincount(data.test_labels, minlength=10)
    assert counts.min() >= 34 and counts.max() <= 38


def test_digits_split_is_fixed_whatever_the_seed() -> None:
    a = load_dataset("digits", seed=0)
    b = load_dataset("Digits", seed=123, test_fraction=0.5)
    assert torch.equal(a.train, b.train) and torch.equal(a.test, b.test)
    assert a.test_labels is not None and b.test_labels is not None
    assert torch.equal(a.test_labels, b.test_labels)


# --------------------------------------------------------------------------- #
# mnist / fashion-mnist from IDX files
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
@pytest.mark.parametrize("gz", [False, True])
def test_idx_files_in_data_dir_round_trip(
    tmp_path: Path, name: str, gz: bool, write_idx_set
) -> None:
    arrays = write_idx_set(tmp_path, gz=gz)
    data = load_dataset(name, tmp_path, download=False)
    assert data.name == name
    assert_matches_idx(data, arrays)
    # .gz files are unpacked elsewhere, never next to the originals.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"{n}.gz" if gz else n for n in IDX_NAMES
    )


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_idx_files_in_torchvision_layout(
    tmp_path: Path, name: str, folder: str, write_idx_set
) -> None:
    arrays = write_idx_set(tmp_path / folder / "raw", gz=True)
    assert_matches_idx(load_dataset(name, tmp_path, download=False), arrays)


def test_idx_files_with_dotted_names(tmp_path: Path, write_idx_set) -> None:
    arrays = write_idx_set(tmp_path, gz=False)
    for name in IDX_NAMES:
        (tmp_path / name).rename(tmp_path / name.replace("-idx", ".idx"))
    assert_matches_idx(load_dataset("mnist", tmp_path, download=False), arrays)


def test_fashion_mnist_from_system_dir_is_read_not_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write_idx_set
) -> None:
    system = tmp_path / "usr-share-datasets-fashion-mnist"
    arrays = write_idx_set(system, gz=True)
    before = sorted(system.iterdir())
    monkeypatch.setattr(idx, "_SYSTEM_DIRS", {"fashion-mnist": (system,)})
    assert_matches_idx(load_dataset("fashion-mnist", download=False), arrays)
    assert sorted(system.iterdir()) == before
    # mnist does not look there.
    with pytest.raises(DataError):
        load_dataset("mnist", download=False)


def test_a_data_dir_given_is_the_only_place_looked_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write_idx_set
) -> None:
    """The run records --data-dir as where its data came from: the system copy does not
    stand in for an incomplete one unsaid, but the message points to it."""
    system = tmp_path / "usr-share-datasets-fashion-mnist"
    write_idx_set(system, gz=True)
    monkeypatch.setattr(idx, "_SYSTEM_DIRS", {"fashion-mnist": (system,)})
    given = tmp_path / "mine"
    write_idx_set(given, gz=False)
    (given / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError) as exc_info:
        load_dataset("fashion-mnist", given, download=False)
    message = assert_one_line(exc_info)
    assert "missing t10k-labels-idx1-ubyte" in message
    assert f"leave out --data-dir to read the copy in {system}" in message


@pytest.mark.parametrize("gz", [False, True])
def test_an_idx_file_of_0_images_says_so(tmp_path: Path, write_idx_set, gz: bool) -> None:
    """torchvision's parser fails on it first: it was called truncated or no IDX file."""
    write_idx_set(tmp_path, gz=gz, n_test=0)
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte(.gz)? holds 0 images"):
        load_dataset("mnist", tmp_path, download=False)
    if not gz:  # a zero-filled file (an interrupted download) has no header to believe
        (tmp_path / "t10k-images-idx3-ubyte").write_bytes(bytes(4000))
        with pytest.raises(DataError, match="truncated or not an IDX file"):
            load_dataset("mnist", tmp_path, download=False)


def test_idx_cache_dir_is_searched_when_no_data_dir(tmp_path: Path, write_idx_set) -> None:
    arrays = write_idx_set(tmp_path / "xdg-cache" / "pyrovae" / "mnist" / "MNIST" / "raw", gz=True)
    assert_matches_idx(load_dataset("mnist", download=False), arrays)


def test_idx_missing_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(DataError) as exc_info:
        load_dataset("fashion-mnist", tmp_path, download=False)
    message = assert_one_line(exc_info)
    assert str(tmp_path) in message and "download disabled" in message
    assert "--data-dir" in message and "apt-get install dataset-fashion-mnist" in message


def test_idx_partial_set_names_missing_file(tmp_path: Path, write_idx_set) -> None:
    write_idx_set(tmp_path, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError) as exc_info:
        load_dataset("mnist", tmp_path, download=False)
    assert "missing t10k-labels-idx1-ubyte" in assert_one_line(exc_info)


def test_idx_download_failure_is_a_data_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def offline(key: str, root: Path) -> None:
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried mirror")

    monkeypatch.setattr(idx, "_download_idx_set", offline)
    with pytest.raises(DataError) as exc_info:
        load_dataset("mnist", tmp_path, download=True)
    message = assert_one_line(exc_info)
    assert "download into" in message and "RuntimeError" in message


def _serve_idx_set(
    monkeypatch: pytest.MonkeyPatch, http_folder, write_idx_set, torchvision_class: str
):
    """The four .gz files on the local server, as torchvision's mirror with their MD5s."""
    import hashlib

    from torchvision import datasets

    folder, url = http_folder
    arrays = write_idx_set(folder, gz=True)
    resources = [
        (path.name, hashlib.md5(path.read_bytes()).hexdigest())
        for path in sorted(folder.glob("*.gz"))
    ]
    dataset_class = getattr(datasets, torchvision_class)
    monkeypatch.setattr(dataset_class, "mirrors", [url])
    monkeypatch.setattr(dataset_class, "resources", resources)
    return arrays, resources


@pytest.mark.parametrize("key", ["mnist", "fashion-mnist"])
def test_idx_download_fetches_checks_and_reads_the_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, http_folder, write_idx_set, key: str
) -> None:
    arrays, _ = _serve_idx_set(monkeypatch, http_folder, write_idx_set, idx.TORCHVISION_CLASS[key])
    data = load_dataset(key, tmp_path / "fetched", download=True)
    assert_matches_idx(data, arrays)
    # Fetched into DIR/<Class>/raw, where the next run finds them without the server.
    monkeypatch.setattr(idx, "_download_idx_set", None)
    assert_matches_idx(load_dataset(key, tmp_path / "fetched", download=True), arrays)


def test_idx_download_with_a_wrong_checksum_is_a_data_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, http_folder, write_idx_set
) -> None:
    _, resources = _serve_idx_set(monkeypatch, http_folder, write_idx_set, "MNIST")
    resources[0] = (resources[0][0], "0" * 32)
    with pytest.raises(DataError) as exc_info:
        load_dataset("mnist", tmp_path / "fetched", download=True)
    message = assert_one_line(exc_info)
    assert "download into" in message and resources[0][0] in message


def test_idx_label_count_mismatch(tmp_path: Path, write_idx_set) -> None:
    write_idx_set(tmp_path, gz=False)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_labels(np.zeros(7, np.uint8)))
    with pytest.raises(DataError, match="20 images but .* 7 labels"):
        load_dataset("mnist", tmp_path, download=False)


@pytest.mark.parametrize("payload", [b"not an idx file at all", b""])
def test_idx_corrupt_file(tmp_path: Path, payload: bytes, write_idx_set) -> None:
    write_idx_set(tmp_path, gz=True)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(payload)
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz") as exc_info:
        load_dataset("mnist", tmp_path, download=False)
    assert_one_line(exc_info)


def test_idx_truncated_file(tmp_path: Path, write_idx_set) -> None:
    write_idx_set(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match="IDX image file"):
        load_dataset("mnist", tmp_path, download=False)


# --------------------------------------------------------------------------- #
# .npy / .npz
# --------------------------------------------------------------------------- #


def test_npy_n_h_w_uint8_split(tmp_path: Path) -> None:
    # Image i is filled with the value i, so rows can be traced through the split.
    images = np.broadcast_to(np.arange(50, dtype=np.uint8)[:, None, None], (50, 6, 5))
    path = tmp_path / "x.npy"
    np.save(path, images)
    data = load_dataset(str(path), seed=3, test_fraction=0.2)
    assert data.train.dtype == torch.uint8 and data.data_shape == (1, 6, 5)
    assert data.train.shape[0] == 40 and data.test.shape[0] == 10
    assert data.train_labels is None and data.test_labels is None
    ids = torch.cat([data.train[:, 0, 0, 0], data.test[:, 0, 0, 0]])
    assert sorted(ids.tolist()) == list(range(50))

    again = load_dataset(path, seed=3, test_fraction=0.2)
    assert torch.equal(again.test, data.test)
    other = load_dataset(path, seed=4, test_fraction=0.2)
    assert not torch.equal(other.test, data.test)


def test_npy_n_c_h_w_float_and_channels_last(tmp_path: Path) -> None:
    images = np.random.default_rng(0).random((8, 3, 4, 5))
    np.save(tmp_path / "chw.npy", images)
    np.save(tmp_path / "hwc.npy", images.transpose(0, 2, 3, 1))
    first = load_dataset(tmp_path / "chw.npy", test_fraction=0.25)
    assert first.train.dtype == torch.float32 and first.data_shape == (3, 4, 5)
    second = load_dataset(tmp_path / "hwc.npy", test_fraction=0.25)
    assert torch.equal(first.train, second.train) and torch.equal(first.test, second.test)
    expected = torch.from_numpy(images.astype(np.float32))
    assert torch.equal(torch.cat([first.train, first.test]).sort(0).values, expected.sort(0).values)


def test_an_rgba_array_names_its_channels_first_and_last(tmp_path: Path) -> None:
    np.save(tmp_path / "rgba.npy", np.zeros((4, 8, 8, 4), np.uint8))  # N x H x W x RGBA
    with pytest.raises(DataError, match="8 channels if they are N x C x H x W, 4 if N x H x W x C"):
        load_dataset(tmp_path / "rgba.npy")


def test_npy_relative_path_under_data_dir(tmp_path: Path) -> None:
    np.save(tmp_path / "small.npy", np.zeros((4, 3, 3), np.uint8))
    assert load_dataset("small.npy", tmp_path).data_shape == (1, 3, 3)


def test_at_least_one_test_image(tmp_path: Path) -> None:
    np.save(tmp_path / "two.npy", np.zeros((2, 3, 3), np.uint8))
    data = load_dataset(tmp_path / "two.npy", test_fraction=0.0)
    assert data.train.shape[0] == 1 and data.test.shape[0] == 1


def test_npy_dtype_conversions(tmp_path: Path) -> None:
    np.save(tmp_path / "int.npy", np.full((3, 2, 2), 200, dtype=np.int64))
    assert load_dataset(tmp_path / "int.npy").train.dtype == torch.uint8
    np.save(tmp_path / "bool.npy", np.ones((3, 2, 2), dtype=bool))
    data = load_dataset(tmp_path / "bool.npy")
    assert data.train.dtype == torch.float32 and is_binary(data.train)
    np.save(tmp_path / "big_endian.npy", np.full((3, 2, 2), 0.5, dtype=">f8"))
    assert float(load_dataset(tmp_path / "big_endian.npy").train[0, 0, 0, 0]) == 0.5


def test_npy_integer_zero_one_warns(tmp_path: Path) -> None:
    np.save(tmp_path / "binary.npy", np.eye(3, dtype=np.uint8)[None].repeat(4, 0))
    with pytest.warns(UserWarning, match="0 or 1"):
        load_dataset(tmp_path / "binary.npy")


def test_npz_with_labels_follow_images(tmp_path: Path) -> None:
    images = np.broadcast_to(np.arange(30, dtype=np.uint8)[:, None, None], (30, 4, 4))
    labels = np.arange(30) * 10
    np.savez(tmp_path / "d.npz", images=images, labels=labels)
    data = load_dataset(tmp_path / "d.npz", seed=1)
    assert data.train_labels is not None and data.test_labels is not None
    assert data.test.shape[0] == 3 and data.train_labels.dtype == torch.int64
    for x, y in ((data.train, data.train_labels), (data.test, data.test_labels)):
        assert torch.equal(x[:, 0, 0, 0].long() * 10, y)


def test_npz_only_array_and_presplit(tmp_path: Path) -> None:
    np.savez(tmp_path / "one.npz", pixels=np.zeros((5, 3, 3), np.uint8), y=np.arange(5))
    assert load_dataset(tmp_path / "one.npz").train_labels is not None
    np.savez(
        tmp_path / "keras.npz",
        x_train=np.zeros((6, 3, 3), np.uint8),
        y_train=np.arange(6),
        x_test=np.full((2, 3, 3), 7, np.uint8),
        y_test=np.arange(2),
    )
    data = load_dataset(tmp_path / "keras.npz")
    assert data.train.shape[0] == 6 and data.test.shape[0] == 2
    assert int(data.test.min()) == 7


def test_npz_errors(tmp_path: Path) -> None:
    np.savez(tmp_path / "two.npz", a=np.zeros((5, 3, 3)), b=np.zeros((5, 3, 3)))
    with pytest.raises(DataError, match="cannot tell which"):
        load_dataset(tmp_path / "two.npz")
    np.savez(tmp_path / "bad_labels.npz", x=np.zeros((5, 3, 3)), y=np.arange(4))
    with pytest.raises(DataError, match="do not match 5 images"):
        load_dataset(tmp_path / "bad_labels.npz")


# --------------------------------------------------------------------------- #
# Folders of images
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_truncated_array_file_is_a_one_line_error(tmp_path: Path, suffix: str) -> None:
    images = np.random.default_rng(0).random((20, 4, 4)).astype(np.float32)
    path = tmp_path / f"a{suffix}"
    (np.save if suffix == ".npy" else np.savez)(path, images)
    whole = path.read_bytes()
    for cut in (0, 10, 100, len(whole) // 2, len(whole) - 10):
        path.write_bytes(whole[:cut])
        with pytest.raises(DataError) as exc_info:
            load_dataset(path)
        assert str(path) in assert_one_line(exc_info), cut


@pytest.mark.parametrize("stream", ["no", "yes"])
def test_an_npy_cut_in_its_payload_says_truncated(tmp_path: Path, stream: str) -> None:
    np.save(tmp_path / "a.npy", np.random.default_rng(0).random((40, 8, 8)).astype(np.float32))
    whole = (tmp_path / "a.npy").read_bytes()
    (tmp_path / "a.npy").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataError, match="shorter than its header says: truncated"):
        load_dataset(tmp_path / "a.npy", stream=stream)


@pytest.mark.parametrize("stream", ["no", "yes"])
def test_float64_beyond_float32s_range_is_said_so_not_inf(tmp_path: Path, stream: str) -> None:
    from pyrovae.config import DataConfig, RunConfig
    from pyrovae.data.prepare import prepare_data

    train_rows, test_rows = split_indices(20, 0, 0.1)
    for row in (int(train_rows[3]), int(test_rows[0])):  # in either split
        values = np.random.default_rng(0).random((20, 4, 4))
        values[row, 1, 1] = 1e300
        np.save(tmp_path / "huge.npy", values)
        config = RunConfig(data=DataConfig(dataset=str(tmp_path / "huge.npy"), stream=stream))
        with pytest.raises(DataError, match="beyond float32's range .largest magnitude 1e.300"):
            prepare_data(config, torch.device("cpu"), binary=False)


def save_png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def test_folder_of_grayscale_pngs(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    expected = rng.integers(0, 256, (6, 5, 7), dtype=np.uint8)
    for i, pixels in enumerate(expected):
        save_png(tmp_path / "imgs" / f"{i:02d}.png", pixels)
    (tmp_path / "imgs" / "notes.txt").write_text("ignored")
    data = load_dataset(tmp_path / "imgs", test_fraction=0.5)
    assert data.train.dtype == torch.uint8 and data.data_shape == (1, 5, 7)
    assert data.train_labels is None
    got = torch.cat([data.train, data.test])[:, 0].numpy()
    assert sorted(map(bytes, got)) == sorted(map(bytes, expected))


def test_folder_of_rgb_class_subfolders(tmp_path: Path) -> None:
    for label, cls in enumerate(["cat", "dog"]):
        for i in range(4):
            save_png(tmp_path / cls / f"{i}.png", np.full((3, 3, 3), label * 100, np.uint8))
    data = load_dataset(tmp_path, test_fraction=0.25)
    assert data.data_shape == (3, 3, 3)
    assert data.train_labels is not None and data.test_labels is not None
    for x, y in ((data.train, data.train_labels), (data.test, data.test_labels)):
        assert torch.equal(x[:, 0, 0, 0].long(), y * 100)


def test_an_empty_class_folder_is_refused_not_made_a_class(tmp_path: Path) -> None:
    # It became a class no model could learn: cvae and m2 trained on without a word.
    for cls in ("cat", "dog"):
        save_png(tmp_path / cls / "0.png", np.zeros((3, 3), np.uint8))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="class folder .*empty holds no PNG or JPEG images"):
        load_dataset(tmp_path)


def test_folder_inconsistent_sizes(tmp_path: Path) -> None:
    save_png(tmp_path / "a.png", np.zeros((4, 4), np.uint8))
    save_png(tmp_path / "b.png", np.zeros((5, 4), np.uint8))
    with pytest.raises(DataError) as exc_info:
        load_dataset(tmp_path)
    message = assert_one_line(exc_info)
    assert "a.png is 4x4" in message and "b.png is 4x5" in message
    assert "pass --image-size N" in message


def test_folder_mixed_modes(tmp_path: Path) -> None:
    save_png(tmp_path / "a.png", np.zeros((4, 4), np.uint8))
    save_png(tmp_path / "b.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(DataError, match="mix grayscale and RGB"):
        load_dataset(tmp_path)
    # A mode read as another (alpha dropped) is named as it is in the file.
    save_png(tmp_path / "b.png", np.zeros((4, 4, 4), np.uint8))  # RGBA
    with pytest.raises(DataError, match="a.png is grayscale but b.png is RGBA, read as RGB;"):
        load_dataset(tmp_path)


def test_folder_image_modes(tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    rgba = np.concatenate([rgb, np.full((4, 4, 1), 128, np.uint8)], axis=2)
    save_png(tmp_path / "modes" / "a_rgba.png", rgba)  # alpha dropped
    Image.fromarray(rgb).convert("P").save(tmp_path / "modes" / "b_palette.png")
    Image.fromarray(rgb).save(tmp_path / "modes" / "c.jpg", quality=95)
    data = load_dataset(tmp_path / "modes", test_fraction=0.0)
    assert data.data_shape == (3, 4, 4) and data.train.dtype == torch.uint8
    images = torch.cat([data.train, data.test])
    # Only the RGBA one is lossless (palette and JPEG are not).
    assert any(torch.equal(x, torch.from_numpy(rgb).permute(2, 0, 1)) for x in images)
    (tmp_path / "deep").mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint16)).save(tmp_path / "deep" / "16bit.png")
    with pytest.raises(DataError, match="not supported"):
        load_dataset(tmp_path / "deep")


def test_folder_empty_and_unreadable(tmp_path: Path) -> None:
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(DataError, match="no PNG or JPEG"):
        load_dataset(tmp_path / "empty")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "x.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="could not read image"):
        load_dataset(tmp_path / "broken")


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` grey pixels and holds none."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        body = kind + payload
        return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def test_decompression_bomb_is_a_one_line_error_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_png(tmp_path / "bomb" / "a.png", np.zeros((4, 4), np.uint8))
    # 2**16 x 2**16 pixels: far over twice PIL's limit, so PIL refuses at open.
    (tmp_path / "bomb" / "b.png").write_bytes(png_header_only(2**16, 2**16))
    with pytest.raises(DataError) as exc_info:
        load_dataset(tmp_path / "bomb")
    message = assert_one_line(exc_info)
    assert "b.png is too large to read safely" in message and "decompression bomb" in message
    # Between the limit and twice it PIL only warns; that is refused as well.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    for side in (12, 20):  # 144 pixels: the warning; 400: the error
        folder = tmp_path / f"side{side}"
        save_png(folder / "a.png", np.zeros((side, side), np.uint8))
        with pytest.raises(DataError) as exc_info:
            load_dataset(folder)
        assert "a.png is too large to read safely" in assert_one_line(exc_info)


@pytest.mark.parametrize("cut", [0, 8, 30, 45, 50])
def test_truncated_png_is_a_one_line_error(tmp_path: Path, cut: int) -> None:
    save_png(tmp_path / "t" / "a.png", np.arange(64, dtype=np.uint8).reshape(8, 8))
    whole = (tmp_path / "t" / "a.png").read_bytes()
    (tmp_path / "t" / "a.png").write_bytes(whole[:cut])
    with pytest.raises(DataError) as exc_info:
        load_dataset(tmp_path / "t")
    assert "a.png" in assert_one_line(exc_info)


# --------------------------------------------------------------------------- #
# Errors on bad arrays and names
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    "array, match",
    [
        (np.array([[[0.5, np.inf]]] * 3), "inf values"),  # NaN is a missing value
        (np.full((3, 2, 2), 300), "0..255"),
        (np.zeros((0, 8, 8), np.uint8), "empty"),
        (np.zeros((5, 64)), "2-D"),
        (np.zeros((5, 2, 4, 4)), "2 channels"),
        (np.array(["a", "b"]), "1-D"),
        (np.full((2, 2, 2), "a"), "unsupported dtype"),
    ],
)
def test_bad_arrays(tmp_path: Path, array: np.ndarray, match: str) -> None:
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(DataError, match=match) as exc_info:
        load_dataset(tmp_path / "bad.npy")
    assert_one_line(exc_info)


def test_floats_outside_the_unit_interval_are_for_the_likelihood_to_judge(tmp_path: Path) -> None:
    # A Gaussian takes standardized data; a Bernoulli needs [0, 1], said with its name.
    from pyrovae.config import DataConfig, RunConfig
    from pyrovae.data.prepare import prepare_data

    values = np.random.default_rng(0).normal(10.0, 3.0, (20, 4, 4)).astype(np.float32)
    values[0, 0, 0] = -0.1
    np.save(tmp_path / "z.npy", values)
    data = load_dataset(tmp_path / "z.npy")
    both = torch.cat([data.train, data.test])[:, 0].numpy()  # split at random, values kept
    np.testing.assert_array_equal(np.sort(both, axis=None), np.sort(values, axis=None))
    config = RunConfig(data=DataConfig(dataset=str(tmp_path / "z.npy")))
    assert prepare_data(config, torch.device("cpu"), binary=False).train.shape == (18, 1, 4, 4)
    with pytest.raises(
        DataError, match=r"has \d+ values outside .*likelihood bernoulli needs"
    ) as exc:
        prepare_data(config, torch.device("cpu"), binary=True)
    assert_one_line(exc)


def test_unknown_name() -> None:
    with pytest.raises(DataError) as exc_info:
        load_dataset("cifar-nope")
    message = assert_one_line(exc_info)
    assert message.startswith("unknown data set 'cifar-nope': expected one of ")
    assert all(name in message for name in DATASETS)


def test_unsupported_file_type(tmp_path: Path) -> None:
    (tmp_path / "data.csv").write_text("1,2,3\n")
    with pytest.raises(DataError, match="unsupported file type '.csv'"):
        load_dataset(tmp_path / "data.csv")


def test_bad_test_fraction() -> None:
    with pytest.raises(ConfigError):
        load_dataset("digits", test_fraction=1.0)


def test_seed_out_of_torch_range_is_one_line(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.zeros((4, 2, 2), np.uint8))
    for seed in (-1, 2**64 - 1):
        assert load_dataset(tmp_path / "a.npy", seed=seed).train.shape[0] == 3
    for seed in (2**64, 99999999999999999999999, -(2**63) - 1):
        with pytest.raises(ConfigError, match="seed must be a whole number"):
            load_dataset(tmp_path / "a.npy", seed=seed)


# --------------------------------------------------------------------------- #
# ArrayData and the pixel helpers
# --------------------------------------------------------------------------- #


def test_image_data_to_and_repr() -> None:
    data = ArrayData(
        "t",
        torch.zeros(4, 1, 2, 3, dtype=torch.uint8),
        torch.zeros(2, 1, 2, 3, dtype=torch.uint8),
        torch.arange(4),
        torch.arange(2),
    )
    moved = data.to("meta")
    assert moved.train.device.type == "meta" and moved.test_labels is not None
    assert moved.test_labels.device.type == "meta" and data.train.device.type == "cpu"
    assert moved.data_shape == (1, 2, 3) and moved.train.dtype == torch.uint8
    assert "(4, 1, 2, 3) uint8" in repr(data)
    with pytest.raises(DataError, match="labels"):
        ArrayData("t", data.train, data.test, torch.arange(3))
    with pytest.raises(DataError, match="dtype"):
        ArrayData("t", data.train, data.test.float())


def test_to_unit_float() -> None:
    x = torch.tensor([0, 51, 255], dtype=torch.uint8)
    y = to_unit_float(x)
    assert y.dtype == torch.float32 and torch.equal(y, x.float() / 255)
    assert y[-1] == 1.0
    f = torch.rand(3)
    assert to_unit_float(f) is f
    assert to_unit_float(f.double()).dtype == torch.float32
    assert torch.equal(to_unit_float(torch.tensor([True, False])), torch.tensor([1.0, 0.0]))
    with pytest.raises(DataError, match="int64"):
        to_unit_float(torch.arange(3))


def test_check_finite_unit_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    check_finite_unit_interval(torch.rand(4, 1, 3, 3), "ok")
    check_finite_unit_interval(torch.tensor([0, 255], dtype=torch.uint8), "ok")
    check_finite_unit_interval(torch.tensor(0.5), "scalar")
    with pytest.raises(DataError, match="empty"):
        check_finite_unit_interval(torch.zeros(0, 1, 2, 2), "nothing")
    # Small chunks: the bad image is found in a later slice, by its global index.
    monkeypatch.setattr(pixels_module, "_CHUNK_ELEMENTS", 8)
    x = torch.full((10, 1, 2, 2), 0.5)
    x[7, 0, 1, 1] = float("nan")
    with pytest.raises(DataError, match=r"batch has 1 NaN/inf values \(first at index 7\)"):
        check_finite_unit_interval(x, "batch")
    x[7, 0, 1, 1] = 1.25
    x[9, 0, 0, 0] = -2.0
    with pytest.raises(DataError, match=r"2 values outside .*min -2, max 1.25, first at index 7"):
        check_finite_unit_interval(x, "batch")


def test_is_binary() -> None:
    assert is_binary(torch.tensor([0, 255], dtype=torch.uint8))
    assert not is_binary(torch.tensor([0, 1], dtype=torch.uint8))
    assert is_binary(torch.tensor([0.0, 1.0, 1.0]))
    assert not is_binary(torch.tensor([0.0, 0.5]))
    assert is_binary(torch.tensor([True, False]))
    assert is_binary(load_dataset("digits").train) is False


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_helpers_on_cuda() -> None:
    x = torch.tensor([[0, 128, 255]], dtype=torch.uint8, device="cuda")
    assert to_unit_float(x).device.type == "cuda"
    assert not is_binary(x)
    check_finite_unit_interval(to_unit_float(x), "cuda batch")
    with pytest.raises(DataError):
        check_finite_unit_interval(torch.tensor([2.0], device="cuda"), "cuda batch")
    data = load_dataset("digits").to("cuda")
    assert data.train.is_cuda and data.test_labels is not None and data.test_labels.is_cuda


def test_no_warnings_on_clean_loads(tmp_path: Path, write_idx_set) -> None:
    write_idx_set(tmp_path, gz=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_dataset("mnist", tmp_path, download=False)
        load_dataset("digits")


@pytest.mark.parametrize("name", ["a" * 300 + ".npy", "mnist", "cifar10"])
def test_a_path_too_long_to_look_at_is_one_line(tmp_path: Path, name: str) -> None:
    """The operating system refuses to look at a name over 255 bytes (ENAMETOOLONG),
    which pathlib raises rather than answering 'not there'."""
    data_dir = tmp_path / ("d" * 300) if name in ("mnist", "cifar10") else None
    with pytest.raises(DataError) as exc_info:
        load_dataset(name, data_dir, download=False)
    assert "File name too long" in assert_one_line(exc_info)


def test_a_bad_point_is_named_by_its_row_before_the_random_split(tmp_path: Path) -> None:
    """Point 53 of the training split was named, where the user's file has it at row 57."""
    from pyrovae.config import DataConfig, RunConfig
    from pyrovae.data.prepare import prepare_data

    images = np.random.default_rng(0).random((100, 8, 8)).astype(np.float32)
    images[57, 0, 0] = 2.0
    np.save(tmp_path / "a.npy", images)
    for stream in ("no", "yes"):
        config = RunConfig(data=DataConfig(dataset=str(tmp_path / "a.npy"), stream=stream))
        train_rows, _ = split_indices(100, 0, 0.1)
        index = int((train_rows == 57).nonzero()[0, 0])
        with pytest.raises(DataError, match=f"index {index} \\(row 57 of the array it was"):
            prepare_data(config, torch.device("cpu"), binary=True)


def test_a_point_out_of_the_support_is_named_by_its_row_in_every_split(tmp_path: Path) -> None:
    import pyrovae

    images = np.random.default_rng(0).random((100, 1, 8, 8)).astype(np.float32)
    for row in (3, 57, 90):  # in the test, validation or training split, whichever it lands in
        bad = images.copy()
        bad[row, 0, 0, 0] = -1.0
        with pytest.raises(DataError, match=f"\\(row {row} of the array it was split from\\)"):
            pyrovae.train(data=torch.from_numpy(bad), likelihood="continuous-bernoulli",
                          val_fraction=0.3, hidden=(8,), latent_dim=2, epochs=1,
                          out=tmp_path / f"r{row}", progress=False, log=lambda _: None)  # fmt: skip
