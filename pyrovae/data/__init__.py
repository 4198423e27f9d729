"""The data layer: readers, validation, splits and binarization.

Data sets come in as two tensors, train and test, each ``(N, C, H, W)``,
checked once before training (:mod:`pyrovae.data.pixels`). The model layer
never imports this package.

Examples
--------
>>> from pyrovae.data import load_dataset, to_unit_float
>>> data = load_dataset("digits")
>>> data.image_shape
(1, 8, 8)
>>> x = to_unit_float(data.train[:64])  # (64, 1, 8, 8) float32 in [0, 1]
"""

from pyrovae.data.dataset import ImageData
from pyrovae.data.load import DATASETS, load_dataset
from pyrovae.data.pixels import check_finite_unit_interval, is_binary, to_unit_float

__all__ = [
    "DATASETS",
    "ImageData",
    "check_finite_unit_interval",
    "is_binary",
    "load_dataset",
    "to_unit_float",
]
