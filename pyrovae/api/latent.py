"""The latent space as an API: ``pyrovae.encode``, ``pyrovae.probe`` and ``pyrovae.explore``.

Thin functions over :mod:`pyrovae.reports.encode`, :mod:`pyrovae.reports.probe`
and :mod:`pyrovae.reports.explore`: they read a run's data as its evaluations
do and seed their draws without changing the caller's random streams.

Example
-------
>>> import pyrovae
>>> run = pyrovae.load_run("runs/digits")
>>> features = pyrovae.encode(run, split="test")    # .mean, .std, .labels
>>> print(pyrovae.probe(run).format_table())        # logistic regression on them
>>> result = pyrovae.explore(run, "runs/digits/latent")
>>> [path.name for path in result.paths]
['interpolation.png', 'traversal.png', 'manifold.png', 'latent_map.png']
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from pyrovae.config import RunConfig
from pyrovae.data.arrays import _ARRAY_FILE_ERRORS, array_file_reason
from pyrovae.data.classes import class_names
from pyrovae.data.dataset import MEMORY
from pyrovae.data.memory import to_points
from pyrovae.data.prepare import prepare_data, split_images
from pyrovae.errors import ConfigError, DataError, check_count
from pyrovae.files import (
    atomic_write_text,
    check_distinct_files,
    check_output_file,
    check_output_folder,
)
from pyrovae.inference.moments import DEFAULT_DRAWS
from pyrovae.model.vae import VAE
from pyrovae.reports.encode import Encoding, check_points, encode_points, non_finite_reason
from pyrovae.reports.explore import TSNE_POINTS, ExploreResult, Log, write_latent_figures
from pyrovae.reports.probe import LABEL_COUNTS, ProbeResult, linear_probe, save_probe_plot
from pyrovae.runtime import isolated_rng
from pyrovae.training.loop import check_in_support

#: Keys of an ``.npz`` that hold labels rather than points.
_LABEL_KEYS = ("y", "labels")


def check_outputs_spare_the_data(
    config: RunConfig,
    outputs: dict[str, str | os.PathLike[str] | None],
    inputs: dict[str, str | os.PathLike[str] | None] | None = None,
) -> None:
    """:func:`~pyrovae.files.check_distinct_files` with the run's own data file among the
    inputs: a command that reads it (evaluate, encode, probe) must not write over it."""
    data = config.data.dataset
    data_file = {"the run's data": data} if Path(data).is_file() else {}
    check_distinct_files(outputs, {**(inputs or {}), **data_file})


class TrainedRun(Protocol):
    """What the latent-space functions read of a :class:`pyrovae.api.Run`."""

    run_dir: Path
    config: RunConfig
    vae: VAE

    @property
    def device(self) -> torch.device: ...

    def split(self, split: str) -> tuple[torch.Tensor, torch.Tensor | None]: ...


def _check_own_data(run: TrainedRun, operation: str) -> None:
    """explore and probe read the run's own splits, which a run trained on data passed
    from Python does not have on disk (and they take no ``data=``)."""
    if run.config.data.dataset == MEMORY:
        raise DataError(
            f"{operation} reads the data the run was trained on, and this run's were passed "
            "from Python: encode your points with pyrovae.encode(run, x) instead"
        )


def check_loaded_run(run: Any) -> None:
    """A path (or anything else) where a loaded run belongs is a one-line error, not an
    AttributeError."""
    if not all(hasattr(run, name) for name in ("vae", "config", "split")):
        raise ConfigError(
            f"expected a Run from pyrovae.load_run(...), got {type(run).__name__}: "
            f"pass pyrovae.load_run({run!r})"[:200]
        )


def _check_run(run: Any, operation: str) -> None:
    """:func:`check_loaded_run`, and a CVAE or M2 run is a one-line error: its encoder
    reads (or gives) the label y besides x."""
    check_loaded_run(run)
    kind = run.config.model.kind
    if kind in ("cvae", "m2"):
        raise ConfigError(
            f"{operation} does not support --model {kind} runs: their q(z|x, y) needs the "
            "label y as well as x"
        )


def encode(
    run: TrainedRun,
    x: Any = None,
    *,
    labels: Any = None,
    dataset: str | None = None,
    split: str = "test",
    draws: int = DEFAULT_DRAWS,
    seed: int | None = 0,
    progress: bool = False,
    out: str | os.PathLike[str] | None = None,
) -> Encoding:
    """The mean and standard deviation of q(z|x) for each point, as an :class:`Encoding`.

    Parameters
    ----------
    run
        A run from :func:`pyrovae.load_run`.
    x
        Points to encode: a tensor or array ``(N, *data_shape)`` (or flat
        ``(N, D)``), or the path of a ``.npy`` / ``.npz`` file (images under
        ``x``, labels under ``y``). Without it, ``split`` of ``dataset`` is encoded.
    labels
        Labels ``(N,)`` of ``x``, kept with the features.
    dataset, split
        A data set the run can read (default: the run's own), prepared as the
        run's evaluations see it, and which split (``test`` or ``train``).
    draws
        Draws of q(z|x) per point for a guide whose moments are not closed
        form (flow guides); the result then holds their standard errors.
    seed
        Seeds those draws, without changing the caller's random streams.
    out
        Also write the result as an ``.npz`` (keys ``mean``, ``std``,
        ``labels``, ``method``; ``mean_se``, ``std_se``, ``draws`` when sampled).
    """
    _check_run(run, "encode")
    if out is not None:
        check_output_file(out, suffixes=(".npz",))
        given = {"--input": x if isinstance(x, (str, os.PathLike)) else None, "--dataset": dataset}
        check_outputs_spare_the_data(run.config, {"--out": out}, given)
    if x is None:
        if labels is not None:
            raise ConfigError("labels= goes with x=; a data set brings its own labels")
        points, point_labels = dataset_split(run, dataset, split)
        what = f"the {split} split of {dataset or run.config.data.dataset}"
    else:
        if dataset is not None:
            raise ConfigError("give x= (points) or dataset= (a data set), not both")
        points, point_labels, what = read_points(x, labels, missing=run.vae.missing)
    points = check_points(points, run.vae, what)
    with isolated_rng(run.device, seed):
        encoding = encode_points(run.vae, points, point_labels, draws=draws, progress=progress)
    if out is not None:
        encoding.save(out)
    return encoding


def dataset_split(
    run: TrainedRun, dataset: str | None, split: str
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Points and labels of ``split`` of ``dataset`` (default: the run's), prepared as the
    run prepares its own (:func:`pyrovae.data.prepare.split_images`)."""
    if split not in ("test", "train"):
        raise ConfigError(f"--split must be test or train, got {split!r}")
    if dataset is None or dataset == run.config.data.dataset:
        return run.split(split)
    config = dataclasses.replace(
        run.config, data=dataclasses.replace(run.config.data, dataset=dataset, stream="no")
    )
    binary = run.vae.likelihood.binary
    prepared = prepare_data(config, run.device, binary=binary)
    check_in_support(run.vae, prepared, config)
    return split_images(config, prepared, split, binary=binary)


def read_points(
    x: Any, labels: Any = None, *, missing: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None, str]:
    """Points (and labels) from an array, a tensor or a ``.npy`` / ``.npz`` path, and
    what to call them in messages; ``missing``: NaN is a missing value (for a run
    trained on incomplete data), not an error."""
    what = "x"
    if isinstance(x, (str, os.PathLike)):
        what = os.fspath(x)
        x, file_labels = _read_file(Path(x))
        labels = file_labels if labels is None else labels
    array = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if array.ndim == 0:
        raise DataError(
            f"{what} is a single number; expected points (N, ...) with one data point per row"
        )
    if array.dtype.kind == "f" and array.size:
        bad = np.isinf(array) if missing else ~np.isfinite(array)
        if bad.any():
            first = int(np.flatnonzero(bad.reshape(array.shape[0], -1).any(axis=1))[0])
            raise DataError(
                f"{what} {non_finite_reason(missing)} (first in point {first}); repair them"
            )
    points, _ = to_points(array, what)
    return points, _labels(labels, points.shape[0], what), what


def _read_file(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    if not path.is_file():
        raise DataError(f"no file {path}: give the path of a .npy or .npz array file")
    if path.suffix.lower() not in (".npy", ".npz"):
        raise DataError(f"{path} must be a .npy or .npz array file")
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            return loaded, None
        with loaded:
            arrays = {key: loaded[key] for key in loaded.files}
    except _ARRAY_FILE_ERRORS as exc:
        raise DataError(f"could not read {path} ({array_file_reason(exc)})") from None
    candidates = ["x"] if "x" in arrays else [k for k in arrays if k not in _LABEL_KEYS]
    if len(candidates) != 1:
        raise DataError(
            f"{path} holds arrays {', '.join(arrays) or 'none'}: save the points under 'x' "
            "(and labels under 'y')"
        )
    labels = next((arrays[k] for k in _LABEL_KEYS if k in arrays), None)
    return arrays[candidates[0]], labels


def _labels(labels: Any, n: int, what: str) -> torch.Tensor | None:
    if labels is None:
        return None
    array = (
        labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    )
    if array.shape != (n,) or array.dtype.kind not in "iu":  # not str, float, complex, bool
        raise DataError(
            f"the labels of {what} must be {n} whole numbers, got shape "
            f"{tuple(array.shape)} {array.dtype}"
        )
    return torch.from_numpy(array.astype(np.int64))  # native byte order, whatever the file's


def probe(
    run: TrainedRun,
    *,
    counts: Sequence[int | None] = LABEL_COUNTS,
    seed: int = 0,
    draws: int = DEFAULT_DRAWS,
    progress: bool = False,
    out: str | os.PathLike[str] | None = None,
    json_path: str | os.PathLike[str] | None = None,
) -> ProbeResult:
    """Logistic regression on the run's posterior means, raw pixels and PCA features.

    Parameters
    ----------
    run
        A run from :func:`pyrovae.load_run` whose data set has class labels.
    counts
        Numbers of class-balanced training labels (``None``: all); counts
        larger than the training split are skipped (and listed).
    seed
        Seeds the labelled subsets, the PCA and the guide's draws.
    draws
        Draws of q(z|x) per point for a flow guide's posterior mean.
    out
        A folder for ``probe.png`` (accuracy against the number of labels).
    json_path
        Also write the result as JSON here.
    """
    _check_run(run, "probe")
    _check_own_data(run, "probe")
    folder = None if out is None else check_output_folder(out, create=False)
    if json_path is not None:
        check_output_file(json_path)
    figure = None if folder is None else Path(folder) / "probe.png"
    check_outputs_spare_the_data(run.config, {"the figure": figure, "--json": json_path})
    with isolated_rng(run.device, seed):
        result = linear_probe(
            run.vae,
            run.split("train"),
            run.split("test"),
            counts=counts,
            seed=seed,
            draws=draws,
            progress=progress,
        )
    if figure is not None:
        save_probe_plot(result, figure)
    if json_path is not None:
        atomic_write_text(json_path, json.dumps(result.to_dict(), indent=2) + "\n")
    return result


def _quiet(line: str) -> None:
    pass


def explore(
    run: TrainedRun,
    out: str | os.PathLike[str] | None = None,
    *,
    tsne_points: int = TSNE_POINTS,
    draws: int = DEFAULT_DRAWS,
    seed: int = 0,
    progress: bool = False,
    log: Log | None = None,
) -> ExploreResult:
    """Write interpolations, traversals, the manifold grid and the latent map of the
    run's test split into ``out`` (default ``RUN/latent``).

    Classes are named where the data set's names are known (Fashion-MNIST,
    MNIST, digits); ``log`` receives the progress lines of the slow parts
    (t-SNE; default: printed when ``progress``).
    """
    _check_run(run, "explore")
    _check_own_data(run, "explore")
    tsne_points = check_count(tsne_points, "tsne_points", 4)
    images, labels = run.split("test")
    if log is None:
        log = print if progress else _quiet
    with isolated_rng(run.device, seed):
        return write_latent_figures(
            run.vae,
            images,
            labels,
            out if out is not None else run.run_dir / "latent",
            class_names=class_names(run.config.data.dataset),
            tsne_points=tsne_points,
            draws=draws,
            seed=seed,
            progress=progress,
            log=log,
        )
