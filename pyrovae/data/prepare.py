"""Data as a run uses it: checked against the likelihood, binarized where asked.

The test set of a binary likelihood is binarized once with a fixed seed, so
that test ELBOs are comparable across epochs and runs; the training set is
binarized once (``--binarize static``) or per batch by the trainer
(``dynamic``).
"""

from __future__ import annotations

import torch

from pyrovae.config import RunConfig
from pyrovae.data.dataset import ImageData
from pyrovae.data.load import load_dataset
from pyrovae.data.pixels import check_finite_unit_interval, is_binary, to_unit_float
from pyrovae.errors import (
    ConfigError,
    DataError,
)


def prepare_data(config: RunConfig, device: torch.device, *, binary: bool) -> ImageData:
    """Load the data set, check it fits the likelihood, binarize statically if asked.

    ``binary`` says whether the run's likelihood needs pixels that are exactly
    0 or 1 (:attr:`pyrovae.model.likelihoods.Likelihood.binary`).

    The test set of a binary likelihood is binarized once with a fixed seed,
    so that test ELBOs are comparable across epochs and runs.
    """
    data = load_dataset(config.data.dataset, config.data.data_dir, seed=config.train.seed)
    for split, images in (("training", data.train), ("test", data.test)):
        check_finite_unit_interval(images, f"the {split} set of {data.name}")
    if binary:
        if config.data.binarize == "none":
            if not (is_binary(data.train) and is_binary(data.test)):
                raise DataError(
                    f"likelihood {config.model.likelihood} needs pixels that are exactly 0 or 1, "
                    f"but {data.name} has intensities; use --binarize dynamic or static"
                )
        else:
            generator = torch.Generator().manual_seed(config.train.seed + 1)
            test = _binarize_like(data.test, generator)
            train = data.train
            if config.data.binarize == "static":
                train = _binarize_like(data.train, generator)
            data = ImageData(data.name, train, test, data.train_labels, data.test_labels)
    return data.to(device)


def _binarize_like(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Bernoulli draws of ``images``' intensities, stored in ``images``' dtype (uint8 as 0/255)."""
    binary = torch.bernoulli(to_unit_float(images), generator=generator)
    return binary.mul(255).to(torch.uint8) if images.dtype == torch.uint8 else binary


def split_images(
    config: RunConfig, data: ImageData, split: str, *, binary: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The images and labels of ``split`` (``test`` or ``train``) as evaluations score them.

    For a binary likelihood the test split is already binarized (by
    :func:`prepare_data`); a training split that is not (``--binarize dynamic``
    resamples it every batch) is binarized here, once, with a fixed seed, so that
    evaluations of the training split are repeatable.
    """
    if split not in ("test", "train"):
        raise ConfigError(f"--split must be test or train, got {split!r}")
    if split == "test":
        return data.test, data.test_labels
    images = data.train
    if binary and not is_binary(images):
        generator = torch.Generator().manual_seed(config.train.seed + 2)
        images = _binarize_like(images.cpu(), generator).to(images.device)
    return images, data.train_labels
