"""The 8x8 UCI handwritten digits bundled with scikit-learn (Alpaydin & Kaynak,
1998): no download, so they are the default data set and what tests use.
"""

from __future__ import annotations

import numpy as np
import torch

from pyrovae.data.dataset import ArrayData

# The fixed digits split: 360 of 1797 images (20%) held out, stratified, so
# every run and every seed is scored on the same test images.
_DIGITS_TEST_SIZE = 360

_DIGITS_SPLIT_SEED = 0

_DIGITS_MAX_PIXEL = 16.0


def load_digits() -> ArrayData:
    # sklearn is imported here: it is slow to import and only digits needs it.
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = (bunch.images / _DIGITS_MAX_PIXEL).astype(np.float32)[:, None]  # (1797, 1, 8, 8)
    labels = bunch.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images,
        labels,
        test_size=_DIGITS_TEST_SIZE,
        random_state=_DIGITS_SPLIT_SEED,
        stratify=labels,
    )
    return ArrayData(
        "digits",
        torch.from_numpy(np.ascontiguousarray(x_train)),
        torch.from_numpy(np.ascontiguousarray(x_test)),
        torch.from_numpy(y_train),
        torch.from_numpy(y_test),
    )
