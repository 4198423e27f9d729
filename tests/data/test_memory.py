"""Tests of :mod:`pyrovae.data.memory`: data passed from Python, of every kind and shape."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from pyrovae.data.dataset import MEMORY, split_indices
from pyrovae.data.memory import from_python
from pyrovae.errors import ConfigError, DataError


class Items(torch.utils.data.Dataset):
    """A map-style Dataset of single arrays (no labels)."""

    def __init__(self, points: np.ndarray) -> None:
        self.points = points

    def __len__(self) -> int:
        return len(self.points)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.points[i]


def one_line(info: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(info.value)
    assert message and "\n" not in message
    return message


def test_a_tensor_of_vectors_is_split_with_the_seed():
    x = torch.randn(50, 3, dtype=torch.float64)
    data = from_python(x, val_fraction=0.2, seed=7)
    assert data.name == MEMORY and data.data_shape == (3,) and data.train.dtype == torch.float32
    train_idx, test_idx = split_indices(50, 7, 0.2)
    assert torch.equal(data.train, x[train_idx].float()) and torch.equal(
        data.test, x[test_idx].float()
    )
    again = from_python(x, val_fraction=0.2, seed=7)
    assert torch.equal(again.test, data.test)
    assert not torch.equal(from_python(x, val_fraction=0.2, seed=8).test, data.test)


def test_arrays_of_images_keep_uint8_and_gain_a_channel():
    pixels = np.random.default_rng(0).integers(0, 256, size=(12, 6, 5), dtype=np.uint8)
    data = from_python(pixels, pixels[:3])
    assert data.data_shape == (1, 6, 5) and data.train.dtype == torch.uint8
    assert data.train.shape[0] == 12 and data.test.shape[0] == 3  # test_data: nothing held out
    small_ints = from_python(pixels.astype(np.int64), val_fraction=0.5)
    assert small_ints.train.dtype == torch.uint8


def test_datasets_and_loaders_give_their_points_and_labels():
    x, y = torch.rand(20, 2, 3, 3), torch.arange(20) % 4
    labelled = from_python(TensorDataset(x, y), val_fraction=0.25, seed=1)
    train_idx, test_idx = split_indices(20, 1, 0.25)
    assert torch.equal(labelled.train, x[train_idx]) and torch.equal(
        labelled.test_labels, y[test_idx]
    )
    loader = DataLoader(TensorDataset(x, y), batch_size=3, shuffle=True)
    from_loader = from_python(loader, val_fraction=0.25, seed=1)
    assert torch.equal(from_loader.train, labelled.train)  # the loader's own order is not kept
    plain = from_python(Items(x.numpy()), DataLoader(Items(x[:4].numpy())))
    assert plain.train_labels is None and plain.test.shape == (4, 2, 3, 3)
    # A TensorDataset of points alone gives 1-tuples (an IndexError before).
    alone = from_python(TensorDataset(x), val_fraction=0.25, seed=1)
    assert torch.equal(alone.train, labelled.train) and alone.train_labels is None


def test_integers_of_0_and_1_are_said_to_be_read_as_pixels():
    # As the file reader says it: each 1 is 1/255, near black, and training binarized
    # almost empty images without a word.
    with pytest.warns(UserWarning, match="integers are all 0 or 1 but are read as 0..255"):
        data = from_python(torch.randint(0, 2, (20, 1, 3, 3)))
    assert data.train.dtype == torch.uint8


def test_mixed_uint8_and_float_splits_meet_on_the_unit_scale():
    data = from_python(torch.full((4, 2), 255, dtype=torch.uint8), torch.full((2, 2), 0.5))
    assert data.train.dtype == torch.float32 and float(data.train.max()) == 1.0


@pytest.mark.parametrize(
    ("data", "test_data", "message"),
    [
        (torch.zeros(0, 3), None, "holds 0 points"),
        (torch.zeros(5, 0), None, "hold no values"),
        (torch.zeros(5), None, r"expected \(N, ...\)"),
        (
            torch.tensor([[0.0, float("inf")], [1.0, float("nan")]]),  # NaN: missing
            None,
            "1 inf values .first in point 0",
        ),
        (np.array([[1.0], [np.inf], [2.0]]), None, "first in point 1"),
        (np.array([[1e300], [0.0]]), None, "float32's range"),
        (np.array([["a"], ["b"]]), None, "unsupported dtype"),
        (np.array([[-1], [3]]), None, "integers run from -1 to 3"),
        (torch.zeros(6, 3), torch.zeros(2, 4), r"test_data points have shape \(4,\)"),
        (torch.zeros(1, 3), None, "nothing is left to test on"),
        ([[0.0, 1.0]], None, "must be a torch tensor"),
        (Items(np.zeros((0, 2))), None, "empty Dataset"),
    ],
)
def test_bad_data_is_one_line(data, test_data, message):
    with pytest.raises(DataError, match=message) as info:
        from_python(data, test_data)
    one_line(info)


def test_masked_values_are_refused_naming_the_point():
    values = np.ma.masked_array(np.ones((4, 3)), mask=np.zeros((4, 3), dtype=bool))
    values.mask[2] = True
    with pytest.raises(DataError, match="point 2 is fully masked") as info:
        from_python(values)
    one_line(info)
    values.mask[2] = [False, True, False]
    with pytest.raises(DataError, match="point 2 has masked values"):
        from_python(values)
    values.mask[2] = False
    assert from_python(values).train.shape == (3, 3)  # a mask with nothing masked is fine


def test_items_of_different_shapes_and_bad_fractions():
    ragged = Items(np.array([np.zeros(2), np.zeros(3)], dtype=object))
    with pytest.raises(DataError, match="different shapes"):
        from_python(ragged)
    with pytest.raises(ConfigError, match="val_fraction"):
        from_python(torch.zeros(4, 2), val_fraction=1.0)


def test_sparse_tensors_and_scipy_matrices_are_read_dense():
    import scipy.sparse

    x = (torch.rand(40, 30, generator=torch.Generator().manual_seed(0)) > 0.7).float()
    for sparse in (x.to_sparse(), scipy.sparse.csr_matrix(x.numpy())):
        data = from_python(sparse, x[:5])
        assert torch.equal(data.train, x)
        assert data.train.layout == torch.strided and data.train.dtype == torch.float32


def test_a_meta_tensor_is_one_line():
    with pytest.raises(DataError, match="on the meta device, which holds no values"):
        from_python(torch.empty(10, 4, device="meta"))
