"""Labels reach the step: batches and their labels line up, and the run's labels are
prepared (--labeled, the number of classes, one-line errors)."""

from __future__ import annotations

import pytest
import torch

from pyrovae.config import DataConfig, RunConfig
from pyrovae.data.dataset import ArrayData
from pyrovae.errors import DataError
from pyrovae.model.spec import model_config
from pyrovae.training.batches import memory_batches
from pyrovae.training.labelled import prepare_labels
from pyrovae.training.step import label_batches


@pytest.mark.parametrize("shard", [(0, 1), (1, 2)])
def test_each_batch_gets_its_own_labels(shard):
    points = torch.arange(11.0).unsqueeze(-1)  # (11, 1): the point's index
    labels = torch.arange(11) * 10
    order = torch.randperm(11)
    batches = memory_batches(points, order, 4, shard)
    pairs = zip(batches, label_batches(labels, order, 4, shard), strict=False)
    seen = 0
    for (x, _), y in pairs:
        assert torch.equal(y, x.squeeze(-1).long() * 10)
        seen += x.shape[0]
    assert seen == (11 if shard == (0, 1) else 5)


def _data(train_labels, test_labels=None):
    train = torch.zeros(len(train_labels), 1, 2, 2)
    test = torch.zeros(2, 1, 2, 2)
    test_labels = torch.tensor([0, 1]) if test_labels is None else test_labels
    return ArrayData("toy", train, test, torch.tensor(train_labels), test_labels)


def _config(kind, labeled=None):
    return RunConfig(data=DataConfig(labeled=labeled), model=model_config(kind=kind))


def test_labeled_keeps_n_labels_and_the_classes_are_recorded():
    config = _config("m2", labeled=4)
    data = prepare_labels(config, _data([0, 1, 2, 0, 1, 2, 0, 1]))
    assert data.train_labels is not None and int((data.train_labels >= 0).sum()) == 4
    assert config.model.n_classes == 3
    # Classes are counted before --labeled hides labels: 4 labels of 10 classes, no
    # test labels, made a classifier of 4 classes.
    config = _config("m2", labeled=4)
    ten = ArrayData("toy", torch.zeros(20, 1, 2, 2), torch.zeros(2, 1, 2, 2), torch.arange(20) % 10)
    prepare_labels(config, ten)
    assert config.model.n_classes == 10


def test_labels_a_kind_needs_are_one_line_errors():
    with pytest.raises(DataError, match="label for every training point"):
        prepare_labels(_config("cvae"), _data([0, -1, 1]))
    with pytest.raises(DataError, match="some labelled training points"):
        prepare_labels(_config("m2"), _data([-1, -1]))
    with pytest.raises(DataError, match="needs labels"):
        prepare_labels(_config("m2"), ArrayData("toy", torch.zeros(3, 2), torch.zeros(1, 2)))
    with pytest.raises(DataError, match="-1 \\(unlabelled\\)"):
        prepare_labels(_config("m2"), _data([0, -2, 1]))
    unlabelled_test = ArrayData("toy", torch.zeros(2, 1, 2, 2), torch.zeros(2, 1, 2, 2),
                                torch.tensor([0, 1]), None)  # fmt: skip
    with pytest.raises(DataError, match="test split of toy has no labels"):
        prepare_labels(_config("cvae"), unlabelled_test)
    with pytest.raises(DataError, match="has only -1 \\(unlabelled\\)"):
        prepare_labels(_config("cvae"), _data([0, 1], torch.tensor([-1, -1])))
    # Ids up to 900000 for 2 classes: a network output each, out of memory (killed).
    with pytest.raises(DataError, match="0..900000, but only 2 of them appear: number"):
        prepare_labels(_config("cvae"), _data([0, 900_000, 0], torch.tensor([0, 900_000])))
    assert prepare_labels(_config("m2"), unlabelled_test).test_labels is None  # y summed out
    vae = _config("vae")
    assert prepare_labels(vae, _data([0, -1])).train_labels.tolist() == [0, -1]
    assert vae.model.n_classes is None
