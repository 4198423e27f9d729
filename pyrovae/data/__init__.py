"""The data layer: readers, validation, splits and binarization.

Data sets come in as an :class:`ArrayData`: train and test points of one
shape ``(N, *data_shape)``, images ``(N, C, H, W)`` from files, image folders
(torchvision's ``ImageFolder``, resized by :mod:`pyrovae.data.folders`) and
named sets (digits, MNIST, Fashion-MNIST, CIFAR-10), any shape from Python
(:mod:`pyrovae.data.memory`), checked once before training
(:mod:`pyrovae.data.pixels`). Training points larger than memory
are streamed from disk (:mod:`pyrovae.data.streams`). The model layer never
imports this package.

Examples
--------
>>> from pyrovae.data import load_dataset, to_unit_float
>>> data = load_dataset("digits")
>>> data.data_shape
(1, 8, 8)
>>> x = to_unit_float(data.train[:64])  # (64, 1, 8, 8) float32 in [0, 1]
"""

from pyrovae.data.dataset import ArrayData
from pyrovae.data.load import DATASETS, load_dataset
from pyrovae.data.memory import from_python
from pyrovae.data.pixels import check_finite_unit_interval, is_binary, to_unit_float

__all__ = [
    "DATASETS",
    "ArrayData",
    "check_finite_unit_interval",
    "from_python",
    "is_binary",
    "load_dataset",
    "to_unit_float",
]
