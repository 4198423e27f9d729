"""Data as a run uses it: checked against the likelihood, binarized where asked.

The test set of a binary likelihood is binarized once with a fixed seed, so
that test ELBOs are comparable across epochs and runs; the training set is
binarized once (``--binarize static``) or per batch by the trainer
(``dynamic``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch.distributions import constraints
from torch.distributions.constraints import Constraint

from pyrovae.config import RunConfig
from pyrovae.data.dataset import MEMORY, ArrayData, Rows, source_row
from pyrovae.data.load import load_dataset
from pyrovae.data.missing import bernoulli_observed, check_observed_rows
from pyrovae.data.pixels import (
    check_for_likelihood,
    is_binary,
    to_unit_float,
)
from pyrovae.data.streams import check_rows, rows_are_binary
from pyrovae.errors import (
    ConfigError,
    DataError,
)

#: How a run trained on data passed from Python is given its data again.
PASS_AGAIN = (
    "pass the same data again from Python: pyrovae.resume / evaluate_run / diagnose_run / "
    "reconstruct(..., data=X, test_data=Y)"
)


def prepare_data(config: RunConfig, device: torch.device, *, binary: bool) -> ArrayData:
    """Load the run's data set, check it fits the likelihood, binarize statically if asked.

    ``binary`` says whether the run's likelihood needs values that are exactly
    0 or 1 (:attr:`pyrovae.model.likelihoods.Likelihood.binary`).

    Raises
    ------
    DataError
        Also when the run was trained on data passed from Python
        (``dataset`` is :data:`~pyrovae.data.dataset.MEMORY`): there is no
        file to load; :func:`prepare_source` takes the data instead.
    """
    if config.data.dataset == MEMORY:
        raise DataError(f"the run was trained on data passed from Python; {PASS_AGAIN}")
    data = load_dataset(
        config.data.dataset,
        config.data.data_dir,
        seed=config.train.seed,
        test_fraction=config.data.test_fraction,
        stream=config.data.stream,
        image_size=config.data.image_size,
        channels=config.data.channels,
    )
    # A binary likelihood needs float values in [0, 1]; the others' ranges are their
    # supports, which training checks (check_support): a Gaussian takes any finite value.
    needs_unit = config.model.likelihood if binary else None
    for split, x in (("training", data.train), ("test", data.test)):
        what = f"the {split} set of {data.name}"
        if isinstance(x, torch.Tensor):
            check_for_likelihood(x, what, needs_unit, missing=True, rows=data.rows(split))
        else:
            check_rows(x, what, unit_interval_for=needs_unit)
    _check_observed(data)
    return _for_likelihood(data, config, binary).to(device)


def prepare_source(
    data: ArrayData, config: RunConfig, device: torch.device, *, binary: bool
) -> ArrayData:
    """:func:`prepare_data` for data passed from Python (:func:`pyrovae.data.memory.from_python`).

    Values are already known to be finite; a binary likelihood needs them in
    [0, 1] (``uint8`` pixels 0..255 are read as /255). Other likelihoods take
    any finite value their support holds (:func:`check_support`).
    """
    if binary:
        for split, x, rows in (("data", data.train, data.train_rows),
                               ("test_data", data.test, data.test_rows)):  # fmt: skip
            assert isinstance(x, torch.Tensor)  # data from Python is in memory
            check_for_likelihood(x, split, config.model.likelihood, missing=True, rows=rows)
    _check_observed(data)
    return _for_likelihood(data, config, binary).to(device)


def _check_observed(data: ArrayData) -> None:
    """NaN marks a missing value; a point with none observed is refused."""
    for split, x in (("training", data.train), ("test", data.test)):
        if isinstance(x, torch.Tensor):
            check_observed_rows(x, f"the {split} set of {data.name}", data.rows(split))


def elementwise_constraint(support: Constraint) -> Constraint:
    """The constraint on each value of a support: ``independent`` (a point's event
    dimensions) and a mixture's (cvae, m2: ``MixtureSameFamily``) unwrapped."""
    while True:
        inner = getattr(support, "base_constraint", None)
        inner = getattr(support, "_base_constraint", None) if inner is None else inner
        if inner is None:
            return support
        support = inner


def check_support(
    data: ArrayData,
    support: Constraint,
    likelihood: str,
    validation: torch.Tensor | None = None,
    validation_rows: torch.Tensor | None = None,
) -> None:
    """Refuse data outside the likelihood's support (e.g. values beyond [0, 1] for a
    continuous Bernoulli), checked in slices of the test set, the ``validation``
    points (held out of the training set; ``validation_rows`` their rows before the
    splits) and the training set."""
    elementwise = elementwise_constraint(support)
    splits = [("test", data.test), ("validation", validation), ("training", data.train)]
    found = first_outside(splits, elementwise)
    if found is not None:
        split, first = found
        rows = validation_rows if split == "validation" else data.rows(split)
        raise DataError(
            f"the {split} set of {data.name} has values outside the support of likelihood "
            f"{likelihood} ({elementwise}; first in point {first}{source_row(rows, first)}); "
            "rescale the data or choose another likelihood"
        )


def first_outside(
    splits: Sequence[tuple[str, torch.Tensor | Rows | None]], elementwise: Constraint
) -> tuple[str, int] | None:
    """The first split, in the order given, with a value outside ``elementwise`` (on the
    :func:`to_unit_float` scale; a missing value, NaN, is not judged), and the index of
    its first such point; ``None`` when all fit. Read in slices; a split ``None`` is none."""
    if elementwise is constraints.real:  # every finite value, which the data were checked for
        return None
    # 8-bit pixels are read as k/255: when the constraint holds all 256, none can leave it,
    # and a streamed file is not read again to find that out.
    pixel_values = torch.arange(256, dtype=torch.float32) / 255
    try:
        eight_bit_fits = bool(elementwise.check(pixel_values).all())
    except RuntimeError:  # bounds of their own per value (a plugin's): check the data
        eight_bit_fits = False
    for split, x in splits:
        if x is None or (eight_bit_fits and x.dtype in (torch.uint8, torch.bool)):
            continue
        for start in range(0, x.shape[0], 4096):
            chunk = to_unit_float(x[start : start + 4096])
            ok = elementwise.check(chunk) | torch.isnan(chunk)
            if not bool(ok.all()):
                return split, start + int((~ok).reshape(chunk.shape[0], -1).any(1).nonzero()[0, 0])
    return None


def _for_likelihood(data: ArrayData, config: RunConfig, binary: bool) -> ArrayData:
    if not binary:
        return data
    if config.data.binarize == "none":
        if not (_binary(data.train) and is_binary(data.test)):
            raise DataError(
                f"likelihood {config.model.likelihood} needs values that are exactly 0 or 1, "
                f"but {data.name} has intensities; use --binarize dynamic or static"
            )
        return data
    generator = torch.Generator().manual_seed(config.train.seed + 1)
    test = _binarize_like(data.test, generator)
    train = data.train
    if config.data.binarize == "static":
        if not isinstance(train, torch.Tensor):
            raise DataError(
                f"--binarize static holds a binarized copy of {data.name} in memory, which "
                "streaming avoids: use --binarize dynamic, or --stream no"
            )
        train = _binarize_like(train, generator)
    return dataclasses.replace(data, train=train, test=test)


def _binary(x: torch.Tensor | Rows) -> bool:
    return is_binary(x) if isinstance(x, torch.Tensor) else rows_are_binary(x)


def _binarize_like(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Bernoulli draws of ``images``' intensities, stored in ``images``' dtype (uint8 as 0/255)."""
    binary = bernoulli_observed(to_unit_float(images), generator=generator)
    return binary.mul(255).to(torch.uint8) if images.dtype == torch.uint8 else binary


def split_images(
    config: RunConfig, data: ArrayData, split: str, *, binary: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The points and labels of ``split`` (``test`` or ``train``) as evaluations score them.

    For a binary likelihood the test split is already binarized (by
    :func:`prepare_data`); a training split that is not (``--binarize dynamic``
    resamples it every batch) is binarized here, once, with a fixed seed, so that
    evaluations of the training split are repeatable. A streamed training
    split is read whole here.
    """
    if split not in ("test", "train"):
        raise ConfigError(f"--split must be test or train, got {split!r}")
    if split == "test":
        return data.test, data.test_labels
    images = data.train if isinstance(data.train, torch.Tensor) else data.train[:]
    if binary and not is_binary(images):
        generator = torch.Generator().manual_seed(config.train.seed + 2)
        images = _binarize_like(images.cpu(), generator).to(images.device)
    return images, data.train_labels
