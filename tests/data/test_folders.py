"""Tests of :mod:`pyrovae.data.folders`: folders of colour images of any size, read through
torchvision's ``ImageFolder`` and transforms (``--image-size``, ``--channels``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pyrovae.data.folders import ImageReader
from pyrovae.data.load import load_dataset
from pyrovae.data.pixels import convert_images
from pyrovae.errors import DataError

#: (height, width) of the generated images: portrait, landscape, square, tiny and large.
SIZES = [(20, 30), (33, 17), (16, 16), (9, 12), (40, 40), (24, 50)]


def write_mixed_folder(root: Path, classes: tuple[str, ...] = ("cats", "dogs")) -> None:
    """Colour PNGs of mixed sizes, one subfolder per class; class k's red channel is 100 k."""
    rng = np.random.default_rng(0)
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i, (h, w) in enumerate(SIZES):
            pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            pixels[..., 0] = 100 * k
            Image.fromarray(pixels).save(root / name / f"{i}.png")


def test_a_folder_of_mixed_sizes_is_resized_and_center_cropped(tmp_path):
    write_mixed_folder(tmp_path / "set")
    data = load_dataset(tmp_path / "set", image_size=16, test_fraction=0.25)
    assert data.data_shape == (3, 16, 16) and data.train.dtype == torch.uint8
    assert data.classes == ("cats", "dogs")
    assert len(data.train) + len(data.test) == 2 * len(SIZES)
    # ImageFolder's labels: the red channel says which class folder an image came from.
    for x, y in ((data.train, data.train_labels), (data.test, data.test_labels)):
        assert y is not None
        assert torch.equal(x[:, 0].flatten(1).float().mean(1).round().long(), 100 * y)


def test_image_size_takes_the_centre_of_the_resized_image(tmp_path):
    # A 20x40 image whose middle 20x30 is white, the rest black: resized to 10x20, the
    # centre crop of 10x10 (the middle 20x20 of the original) is all white.
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, 5:35] = 255
    (tmp_path / "flat").mkdir()
    Image.fromarray(pixels).save(tmp_path / "flat" / "a.png")
    Image.fromarray(pixels).save(tmp_path / "flat" / "b.png")
    data = load_dataset(tmp_path / "flat", image_size=10)
    assert data.data_shape == (3, 10, 10) and data.train_labels is None
    assert (data.train == 255).all() and (data.test == 255).all()


def test_without_image_size_mixed_sizes_say_to_pass_it(tmp_path):
    write_mixed_folder(tmp_path / "set")
    with pytest.raises(DataError) as exc_info:
        load_dataset(tmp_path / "set")
    message = str(exc_info.value)
    assert "\n" not in message and "differ in size" in message and "--image-size" in message


@pytest.mark.parametrize("channels", [None, 1])
def test_a_16_bit_image_among_8_bit_ones_is_named_as_such(tmp_path, channels):
    """It was blamed on a mix of grey and colour, with --channels to pass, which it
    refused too."""
    (tmp_path / "set").mkdir()
    Image.fromarray(np.full((8, 8), 77, np.uint8)).save(tmp_path / "set" / "a.png")
    Image.fromarray(np.full((8, 8), 3000, np.uint16)).save(tmp_path / "set" / "b.png")
    with pytest.raises(DataError, match=r"b.png: pixel mode I;16 .* is not supported"):
        load_dataset(tmp_path / "set", channels=channels)


def test_channels_convert_grey_and_colour_both_ways(tmp_path):
    (tmp_path / "mixed").mkdir()
    grey = np.full((8, 8), 77, np.uint8)
    colour = np.zeros((8, 8, 3), np.uint8)
    colour[..., 1] = 200  # pure green: luma 0.587 * 200 = 117.4
    Image.fromarray(grey).save(tmp_path / "mixed" / "a.png")
    Image.fromarray(colour).save(tmp_path / "mixed" / "b.png")
    with pytest.raises(DataError, match="--channels"):
        load_dataset(tmp_path / "mixed")
    rgb = ImageReader(None, 3)
    assert (rgb(tmp_path / "mixed" / "a.png") == 77).all()
    assert torch.equal(rgb(tmp_path / "mixed" / "b.png"), torch.from_numpy(colour).permute(2, 0, 1))
    gray = ImageReader(None, 1)
    assert gray(tmp_path / "mixed" / "a.png").shape == (1, 8, 8)
    assert (gray(tmp_path / "mixed" / "a.png") == 77).all()
    assert (gray(tmp_path / "mixed" / "b.png") == 117).all()
    assert load_dataset(tmp_path / "mixed", channels=3).data_shape == (3, 8, 8)


def test_a_streamed_folder_reads_what_the_whole_folder_holds(tmp_path):
    write_mixed_folder(tmp_path / "set")
    options = {"image_size": 12, "channels": 1, "test_fraction": 0.25, "seed": 3}
    streamed = load_dataset(tmp_path / "set", stream="yes", **options)
    whole = load_dataset(tmp_path / "set", stream="no", **options)
    assert streamed.streamed and streamed.data_shape == whole.data_shape == (1, 12, 12)
    assert torch.equal(streamed.train[:], whole.train) and torch.equal(streamed.test, whole.test)
    assert streamed.classes == whole.classes == ("cats", "dogs")
    assert torch.equal(streamed.train_labels, whole.train_labels)


def test_the_reader_survives_pickling_for_dataloader_workers(tmp_path):
    import pickle

    Image.fromarray(np.zeros((30, 20, 3), np.uint8)).save(tmp_path / "a.png")
    reader = ImageReader(8, 1)
    assert reader(tmp_path / "a.png").shape == (1, 8, 8)  # builds the transforms
    again = pickle.loads(pickle.dumps(reader))
    assert torch.equal(again(tmp_path / "a.png"), reader(tmp_path / "a.png"))


def test_named_sets_and_arrays_are_converted_as_folders_are(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "rgb.npy", rng.integers(0, 256, (6, 3, 20, 30), dtype=np.uint8))
    data = load_dataset(tmp_path / "rgb.npy", image_size=10, channels=1)
    assert data.data_shape == (1, 10, 10) and data.train.dtype == torch.uint8
    digits = load_dataset("digits", image_size=16, channels=3)
    assert digits.data_shape == (3, 16, 16) and digits.train.dtype == torch.float32
    assert float(digits.train.min()) >= 0.0 and float(digits.train.max()) <= 1.0
    with pytest.raises(DataError, match="--stream no"):
        load_dataset(tmp_path / "rgb.npy", image_size=10, stream="yes")


def test_convert_images_matches_the_folder_reader(tmp_path):
    """The tensor path (named sets, arrays) gives what the PIL path gives a file."""
    pixels = np.random.default_rng(1).integers(0, 256, (24, 36, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    from_file = ImageReader(12, None)(tmp_path / "a.png").long()
    from_tensor = convert_images(torch.from_numpy(pixels).permute(2, 0, 1)[None], 12)[0].long()
    # PIL's and torch's antialiased bilinear filters round differently by a level or so.
    assert (from_file - from_tensor).abs().max() <= 2
    unchanged = from_tensor[None]
    assert convert_images(unchanged) is unchanged  # nothing asked: no copy


@pytest.mark.parametrize(
    ("options", "match"), [({"channels": 2}, "1 .* or 3"), ({"image_size": 0}, "positive")]
)
def test_bad_sizes_and_channels_are_one_line(options, match):
    from pyrovae.errors import ConfigError

    with pytest.raises(ConfigError, match=match):
        load_dataset("digits", **options)


def test_the_config_checks_and_records_image_size_and_channels():
    from pyrovae.config import DataConfig, RunConfig
    from pyrovae.errors import ConfigError

    for bad, match in (({"image_size": 0}, "--image-size"), ({"channels": 2}, "--channels")):
        with pytest.raises(ConfigError, match=match):
            DataConfig(**bad).validate()
    again = RunConfig.from_dict(RunConfig(DataConfig(image_size=64, channels=3)).to_dict())
    assert (again.data.image_size, again.data.channels) == (64, 3)
    older = RunConfig().to_dict()  # a config.json written before these fields existed
    del older["data"]["image_size"], older["data"]["channels"]
    assert RunConfig.from_dict(older).data.image_size is None


def test_a_jpeg_decoded_at_a_reduced_scale_matches_a_full_decode_resized(tmp_path, monkeypatch):
    from PIL.JpegImagePlugin import JpegImageFile
    from torchvision.transforms.v2 import functional as TF

    rows, cols = np.mgrid[0:200, 0:160]
    smooth = np.stack([rows * 255 // 199, cols * 255 // 159, (rows + cols) * 255 // 358], axis=2)
    Image.fromarray(smooth.astype(np.uint8)).save(tmp_path / "a.jpg", quality=95)
    with Image.open(tmp_path / "a.jpg") as image:
        full = TF.pil_to_tensor(image.convert("RGB"))
    with Image.open(tmp_path / "a.jpg") as image:
        image.draft(None, (40, 40))
        assert image.size == (40, 50)  # decoded at 1/4: the smallest scale with both sides >= 40
    expected = TF.center_crop(TF.resize(full, [40], antialias=True), [40]).float()
    drafts = []
    draft = JpegImageFile.draft
    monkeypatch.setattr(
        JpegImageFile,
        "draft",
        lambda self, mode, size: drafts.append(size) or draft(self, mode, size),
    )
    got = ImageReader(40, 3)(tmp_path / "a.jpg").float()
    assert drafts == [(40, 40)]
    assert got.shape == expected.shape == (3, 40, 40)
    assert (got - expected).abs().mean() < 2.0  # levels of 255
