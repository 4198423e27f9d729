from __future__ import annotations

import pytest
import torch

from pyrovae.data.labels import UNLABELLED, keep_balanced
from pyrovae.errors import DataError


def test_keep_balanced_keeps_n_labels_spread_over_the_classes():
    labels = torch.arange(100) % 4
    labels[:8] = 0  # class 0 is the largest
    kept = keep_balanced(labels, 10, seed=3)
    known = kept >= 0
    assert int(known.sum()) == 10
    assert torch.equal(kept[known], labels[known])
    counts = torch.bincount(kept[known], minlength=4)
    assert counts.max() - counts.min() <= 1
    assert torch.equal(kept, keep_balanced(labels, 10, seed=3))
    assert not torch.equal(kept, keep_balanced(labels, 10, seed=4))
    assert int((kept == UNLABELLED).sum()) == 90


def test_keep_balanced_refuses_more_labels_than_there_are():
    with pytest.raises(DataError, match="more labels"):
        keep_balanced(torch.tensor([0, 1, -1]), 3, seed=0)
