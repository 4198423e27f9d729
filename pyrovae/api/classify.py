"""Labels in the API: classify with a semi-supervised (M2) run, draw a class from a
conditional (CVAE) or M2 run, and what ``evaluate`` computes for them.

Example
-------
>>> import pyrovae
>>> run = pyrovae.load_run("runs/m2")
>>> labels = pyrovae.classify(run, x)                        # (N,) int64
>>> probs = pyrovae.classify(run, x, probabilities=True)     # (N, n_classes)
>>> threes = pyrovae.sample(pyrovae.load_run("runs/cvae"), 64, label=3)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from pyrovae.config import RunConfig
from pyrovae.data.pixels import check_finite_unit_interval
from pyrovae.errors import ConfigError, DataError
from pyrovae.files import atomic_write
from pyrovae.inference.classification import accuracy, class_probabilities
from pyrovae.model.conditional import LabelledVAE
from pyrovae.model.semi_supervised import SemiSupervisedVAE
from pyrovae.model.vae import VAE
from pyrovae.reports.evaluate import EvaluationResult, add_accuracy


class LoadedRun(Protocol):
    """What :func:`classify` reads of a :class:`pyrovae.api.Run` (from ``load_run``)."""

    run_dir: Path
    config: RunConfig
    vae: VAE


#: What ``evaluate`` computes for an M2 run besides the test accuracy: the metrics
#: that read the model only through log p(x, z) (y summed out) and q(z|x).
M2_METRICS = ("logpx",)


def classifier_of(run: LoadedRun) -> SemiSupervisedVAE:
    """The run's M2 model, or a one-line error for a run of another kind."""
    if not isinstance(run.vae, SemiSupervisedVAE):
        raise ConfigError(
            f"{run.run_dir} is a --model {run.config.model.kind} run, which has no "
            "classifier: classify takes --model m2 runs"
        )
    return run.vae


def classify(run: LoadedRun, x: Any, *, probabilities: bool = False) -> torch.Tensor:
    """The classes (``(N,)`` int64) or class probabilities q(y|x) (``(N, n_classes)``)
    of the points ``x`` under an M2 run (from :func:`pyrovae.load_run`), on the CPU.

    ``x`` is an array or tensor of points of the run's shape ``(N, *data_shape)``
    (images of one channel may leave it out: ``(N, H, W)``), uint8 pixels 0..255
    or floats (in [0, 1] for a binary likelihood).
    """
    vae = classifier_of(run)
    points = as_points(x, vae.data_shape, binary=vae.likelihood.binary)
    probs = class_probabilities(vae, points)
    return probs if probabilities else probs.argmax(-1)


def read_points(input_path: str | Path) -> np.ndarray:
    """The array of a ``.npy`` file, or a one-line :class:`DataError`."""
    from pyrovae.data.arrays import _ARRAY_FILE_ERRORS, array_file_reason

    if Path(input_path).suffix.lower() != ".npy":
        raise DataError(f"{input_path} must be a .npy array file")
    try:
        array = np.load(input_path, allow_pickle=False)
    except _ARRAY_FILE_ERRORS as err:
        raise DataError(f"could not read {input_path}: {array_file_reason(err)}") from None
    if not isinstance(array, np.ndarray):
        raise DataError(f"{input_path} is not a .npy array (an .npz holds several)")
    return array


def write_classes(out: str | Path, result: torch.Tensor) -> None:
    """Write ``result`` as ``.npy`` at exactly ``out``, atomically."""
    values = result.numpy()
    atomic_write(out, lambda handle: np.save(handle, values, allow_pickle=False))


def as_points(x: Any, data_shape: tuple[int, ...], *, binary: bool) -> torch.Tensor:
    """``x`` as a ``(N, *data_shape)`` tensor in the stored form (uint8 or float32),
    or a one-line :class:`DataError` saying what is wrong with it."""
    array = np.asarray(x.cpu() if isinstance(x, torch.Tensor) else x)
    if array.dtype.kind not in "biuf":
        raise DataError(f"points must be numbers, got dtype {array.dtype}")
    if array.ndim == len(data_shape) and data_shape[0] == 1:  # (N, H, W) for (1, H, W)
        array = array[:, None]
    if array.ndim < 1 or tuple(array.shape[1:]) != tuple(data_shape):
        wanted = ", ".join(map(str, data_shape))
        raise DataError(
            f"points of shape {tuple(array.shape[1:])} (array {array.shape}), but the run "
            f"models points of shape {tuple(data_shape)}: pass an (N, {wanted}) array"
        )
    if array.shape[0] == 0:
        raise DataError(f"the input holds 0 points (shape {array.shape}): nothing to classify")
    if array.dtype.kind in "iu":
        if array.size and (array.min() < 0 or array.max() > 255):
            raise DataError("integer pixels must be 0..255 (or pass floats in [0, 1])")
        return torch.from_numpy(array.astype(np.uint8))
    points = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    if binary:
        check_finite_unit_interval(points, "the input")
    elif not bool(torch.isfinite(points).all()):
        raise DataError("the input holds NaN or infinite values")
    return points


def sample_images(
    vae: VAE, n: int, *, temperature: float, mean: bool, label: int | None
) -> torch.Tensor:
    """``n`` draws of the run's model; ``label`` picks the class of a CVAE or M2 run."""
    if label is None:
        return vae.sample(n, temperature=temperature, mean=mean)
    if not isinstance(vae, LabelledVAE):
        raise ConfigError(
            f"--label is for --model cvae or m2 runs, not {vae.config.kind}: leave it out"
        )
    return vae.sample(n, temperature=temperature, mean=mean, label=label)


def check_label(config: RunConfig, label: int | None) -> None:
    """Refuse ``label`` for a run of ``config`` before anything is drawn."""
    if label is None:
        return
    kind, n_classes = config.model.kind, config.model.n_classes
    if n_classes is None:
        raise ConfigError(f"--label is for --model cvae or m2 runs, not {kind}: leave it out")
    if not 0 <= label < n_classes:
        raise ConfigError(f"--label must be from 0 to {n_classes - 1}, got {label}")


def evaluated_metrics(
    config: RunConfig, metrics: list[str], gaps: int
) -> tuple[list[str], int, str | None]:
    """The metrics and gap points ``evaluate`` computes for a run of ``config``, and a
    note on what it leaves out: an M2 run gets log p(x) (y summed out) and the
    accuracy of q(y|x); a CVAE run is refused (it models p(x|y), not p(x))."""
    kind = config.model.kind
    if kind == "cvae":
        raise ConfigError(
            "evaluate does not support --model cvae runs: they model p(x|y), not p(x) "
            "(sample --label shows what they learnt)"
        )
    if kind != "m2":
        return metrics, gaps, None
    chosen = [m for m in metrics if m in M2_METRICS]
    left = [m for m in metrics if m not in M2_METRICS] + (["gaps"] if gaps else [])
    if not chosen:  # computing log p(x) anyway ignored what was asked for
        raise ConfigError(
            f"--metrics {','.join(metrics)}: a --model m2 run computes {', '.join(M2_METRICS)} "
            "alone (the others assume a VAE's single latent z): ask for it"
        )
    note = None
    if left:
        note = (
            f"--model m2 runs: {', '.join(sorted(set(left)))} not computed (they assume a "
            "VAE's single latent z); log p(x) sums y out, and q(y|x)'s accuracy is reported"
        )
    return chosen, 0, note


def check_diagnosable(config: RunConfig) -> None:
    """``diagnose`` reads a VAE's single latent z: refuse a CVAE or M2 run in one line."""
    if config.model.kind in ("cvae", "m2"):
        raise ConfigError(
            f"diagnose does not support --model {config.model.kind} runs (their latent "
            "includes the label y); evaluate reports what it can for m2"
        )


def report_accuracy(
    result: EvaluationResult, vae: VAE, images: torch.Tensor, labels: torch.Tensor | None
) -> None:
    """Add the accuracy of an M2 run's classifier on the evaluated points to ``result``."""
    if not isinstance(vae, SemiSupervisedVAE) or labels is None:
        return
    labels = labels[: images.shape[0]]
    known = labels.cpu() >= 0
    predicted = class_probabilities(vae, images[known.to(images.device)]).argmax(-1)
    add_accuracy(result, accuracy(predicted, labels.cpu()[known]))
