"""Fill in missing values (NaN) with a trained run: ``pyrovae.impute`` and the files of
``pyrovae impute``.

The estimator is :mod:`pyrovae.inference.impute`; here the input is checked
against the run (its shape, the likelihood's support), a ground truth is
checked and scored, and the results are written through :mod:`pyrovae.files`.

Example
-------
>>> import numpy as np, pyrovae
>>> run = pyrovae.load_run("runs/mine")                           # doctest: +SKIP
>>> x = np.load("x.npy")                                          # NaN where missing
>>> result = pyrovae.impute(run, x, draws=10, refine="sir")       # doctest: +SKIP
>>> result.mean, result.std, result.draws.shape                   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.distributions import constraints

from pyrovae.api import CheckpointName, Run, WeightsName, load_run
from pyrovae.data.arrays import _ARRAY_FILE_ERRORS, array_file_reason
from pyrovae.errors import ConfigError, DataError, check_count
from pyrovae.files import (
    atomic_write,
    atomic_write_text,
    check_distinct_files,
    check_output_file,
)
from pyrovae.inference.impute import (
    DEFAULT_PARTICLES,
    INTERVAL,
    Imputation,
    ImputationScore,
    Refine,
    score_imputation,
)
from pyrovae.inference.impute import (
    impute as impute_values,
)
from pyrovae.runtime import isolated_rng


@dataclass
class ImputeResult:
    """An imputation, as NumPy arrays of the input's shape.

    Attributes
    ----------
    mean
        The input with every NaN replaced by its posterior-predictive mean.
    std
        Posterior-predictive standard deviation per value (0 where observed).
    lower, upper
        The central 90% predictive interval per value.
    draws
        ``(M, *input shape)`` multiple imputations, or ``None``.
    score
        RMSE and coverage against the ground truth, when one was given.
    notes
        What the caller should know (e.g. that the input had no missing value).
    """

    mean: np.ndarray
    std: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    draws: np.ndarray | None
    n_missing: int
    particles: int
    refine: str
    ess: float
    score: ImputationScore | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The figures, as ``--json`` writes them."""
        return {
            "n_points": int(self.mean.shape[0]) if self.mean.ndim else 1,
            "n_missing": self.n_missing,
            "particles": self.particles,
            "refine": self.refine,
            "draws": 0 if self.draws is None else int(self.draws.shape[0]),
            "mean_ess": self.ess,
            "interval": INTERVAL,
            "score": None if self.score is None else self.score.to_dict(),
            "notes": self.notes,
        }

    def format_summary(self) -> str:
        lines = [f"imputed {self.n_missing} missing values ({self.refine}, {self.particles} draws "
                 f"of z per point, mean ESS {self.ess:.1f})"]  # fmt: skip
        if self.score is not None:
            s = self.score
            lines.append(
                f"RMSE {s.rmse:.4f} ± {s.rmse_stderr:.4f}, {INTERVAL:.0%} interval coverage "
                f"{s.coverage:.3f} ± {s.coverage_stderr:.3f} over {s.n_missing} missing values "
                f"of {s.n_points} points (Monte Carlo stderr of a value {s.mean_mc_stderr:.4f})"
            )
        return "\n".join([*lines, *self.notes])


def impute(
    run: Run | str | Path | None,
    x: np.ndarray | torch.Tensor,
    *,
    draws: int = 0,
    refine: Refine = "none",
    particles: int = DEFAULT_PARTICLES,
    truth: np.ndarray | torch.Tensor | None = None,
    seed: int | None = 0,
    device: str = "auto",
    batch_size: int = 256,
    progress: bool = False,
) -> ImputeResult:
    """Replace the NaN of ``x`` by the posterior-predictive mean of ``run``'s model.

    Parameters
    ----------
    run
        A loaded run, or its folder (default: the latest under ``runs/``).
    x
        Points of the run's shape, NaN where missing: ``(N, *data_shape)``, one
        point ``data_shape``, or for images of one channel ``(N, H, W)``/``(H, W)``;
        on the scale the run was trained on ([0, 1] for 8-bit images).
    draws
        Multiple imputations to return (conditional draws given the observed values).
    refine
        ``"none"``: z from q(z|x_obs); ``"sir"``: importance-weighted moments and
        sampling-importance-resampling draws (weights p(x_obs, z) / q(z|x_obs)).
    particles
        Draws of z per point (also those the interval is read from).
    truth
        The complete data, for the RMSE over missing values and the coverage of
        the 90% intervals, each with its standard error.
    seed
        Seeds the draws, leaving the caller's random streams alone.
    progress
        A progress bar of the points imputed, on stderr.
    """
    _check_draws(draws, particles)
    loaded = run if isinstance(run, Run) else load_run(run, device=device)
    _check_kind(loaded)
    values = _as_float_tensor(x, "the input")
    points = _as_points(values, tuple(loaded.config.model.data_shape or ()), "the input")
    notes = []
    n_missing = int(torch.isnan(points).sum())
    if n_missing == 0:
        notes.append("the input has no missing values (NaN): it is returned unchanged")
    target = None if truth is None else _checked_truth(truth, values, points, n_missing)
    _check_support(loaded, points)
    with isolated_rng(loaded.device, seed):
        imputation = impute_values(
            loaded.vae, points.to(loaded.device), particles=particles, draws=draws,
            refine=refine, batch_size=batch_size, progress=progress,
        )  # fmt: skip
    score = None if target is None else score_imputation(_to_cpu(imputation), target)
    return _result(imputation, values.shape, n_missing, score, notes)


def _check_kind(run: Run) -> None:
    kind = run.config.model.kind
    if kind != "vae":
        raise ConfigError(
            f"impute needs a VAE run (--model vae), but {run.run_dir} is a --model {kind} run"
        )


def _as_float_tensor(x: np.ndarray | torch.Tensor, what: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        array = np.asarray(x)
        if array.dtype.kind not in "biuf":
            raise DataError(f"{what} has dtype {array.dtype}; expected numbers, NaN where missing")
        if array.dtype.kind == "f" and (array.dtype.itemsize > 8 or not array.dtype.isnative):
            array = array.astype(np.float64)  # torch has no long double, nor foreign byte order
        elif not array.dtype.isnative:
            array = array.astype(array.dtype.newbyteorder("="))
        x = array
    tensor = torch.as_tensor(x)
    if tensor.numel() == 0:
        raise DataError(f"{what} holds no values")
    if tensor.dtype == torch.bool:  # binary values, as encode and classify read them
        return tensor.to(torch.float32).cpu()
    if not tensor.dtype.is_floating_point:  # integer pixels, which hold no NaN to fill
        low, high = int(tensor.long().min()), int(tensor.long().max())  # uint16 has no min
        if low < 0 or high > 255:
            raise DataError(
                f"{what} has integers from {low} to {high}; expected pixels 0..255, or "
                "floats with NaN where missing"
            )
        return tensor.to(torch.float32).cpu() / 255
    return tensor.detach().to(torch.float32).cpu()


def _as_points(x: torch.Tensor, shape: tuple[int, ...], what: str) -> torch.Tensor:
    """``x`` as ``(N, *shape)``; one point, or one-channel images without the channel."""
    candidates = [shape, shape[1:]] if len(shape) > 1 and shape[0] == 1 else [shape]
    for point in candidates:
        if tuple(x.shape[1:]) == point:
            return x.reshape(x.shape[0], *shape)
        if tuple(x.shape) == point:
            return x.reshape(1, *shape)
    raise DataError(
        f"{what} has shape {tuple(x.shape)}, but the run models points of shape {shape}: "
        f"expected (N, {', '.join(map(str, shape))}) or one point"
    )


def _checked_truth(
    truth: np.ndarray | torch.Tensor, values: torch.Tensor, points: torch.Tensor, n_missing: int
) -> torch.Tensor:
    target = _as_float_tensor(truth, "the truth")
    if target.shape != values.shape:
        raise DataError(
            f"the truth has shape {tuple(target.shape)} but the input {tuple(values.shape)}; "
            "give the complete version of the input"
        )
    if bool(torch.isnan(target).any()):
        raise DataError("the truth holds NaN: it must be the complete data")
    if n_missing == 0:
        raise DataError("the input has no missing values (NaN): there is nothing to score")
    target = target.reshape(points.shape)
    observed = ~torch.isnan(points)
    differ = int((~torch.isclose(points[observed], target[observed], atol=1e-6)).sum())
    if differ:
        raise DataError(
            f"the truth differs from the input at {differ} observed values: "
            "it must be the complete version of the input"
        )
    return target


def _check_support(run: Run, points: torch.Tensor) -> None:
    """Observed values must lie where the run's likelihood puts mass (e.g. [0, 1])."""
    with torch.no_grad():
        px = run.vae.px(torch.zeros(1, run.config.model.latent_dim, device=run.device))
    support = getattr(px.support, "base_constraint", px.support)
    if run.vae.likelihood.binary:  # intensities in [0, 1], as training checks before binarizing
        support = constraints.unit_interval
    if support is None:
        return
    ok = support.check(torch.nan_to_num(points, nan=0.0).to(run.device)) | torch.isnan(points).to(
        run.device
    )
    if not bool(ok.all()):
        raise DataError(
            f"the input has values outside the support of likelihood "
            f"{run.config.model.likelihood} ({_shown(support)}); give them on the scale the "
            "run was trained on (8-bit images as floats in [0, 1])"
        )


def _shown(support: constraints.Constraint) -> str:
    """``[0, 1]``, ``[0, 1)``, ``> 0`` or ``>= 0`` for the constraints of those kinds, else
    the constraint's own text."""
    low, high = getattr(support, "lower_bound", None), getattr(support, "upper_bound", None)
    kind = type(support)
    if kind is constraints.interval and isinstance(low, (int, float)):
        return f"[{low:g}, {high:g}]"
    if kind is constraints.half_open_interval and isinstance(low, (int, float)):
        return f"[{low:g}, {high:g})"
    if kind is constraints.greater_than and isinstance(low, (int, float)):
        return f"> {low:g}"
    if kind is constraints.greater_than_eq and isinstance(low, (int, float)):
        return f">= {low:g}"
    return str(support)


def _to_cpu(imputation: Imputation) -> Imputation:
    moved: dict[str, Any] = {
        name: value.cpu()
        for name, value in imputation.__dict__.items()
        if isinstance(value, torch.Tensor)
    }
    return dataclasses.replace(imputation, **moved)


def _result(
    imputation: Imputation,
    shape: torch.Size,
    n_missing: int,
    score: ImputationScore | None,
    notes: list[str],
) -> ImputeResult:
    def back(t: torch.Tensor) -> np.ndarray:
        return t.cpu().reshape(shape).numpy()

    draws = imputation.draws
    return ImputeResult(
        mean=back(imputation.mean),
        std=back(imputation.std),
        lower=back(imputation.lower),
        upper=back(imputation.upper),
        draws=None if draws is None else draws.cpu().reshape(-1, *shape).numpy(),
        n_missing=n_missing,
        particles=imputation.particles,
        refine=imputation.refine,
        ess=float(imputation.ess.mean()),
        score=score,
        notes=notes,
    )


#: The suffixes ``--out`` takes: the filled data alone, or every array by name.
OUT_SUFFIXES = (".npy", ".npz")


def draws_path(out: str | Path) -> Path:
    """Where ``pyrovae impute --out X.npy --draws M`` writes the draws: ``X-draws.npz``."""
    out = Path(out)
    return out.with_name(f"{out.stem}-draws.npz")


def _check_draws(draws: int, particles: int) -> None:
    """Refuse draws and particles that :func:`impute` cannot use, before a run is loaded."""
    draws, particles = check_count(draws, "draws", 0), check_count(particles, "particles", 2)
    if draws > particles:
        raise ConfigError(
            f"--draws {draws} is more than --particles {particles}: raise --particles"
        )


def impute_file(
    input_path: str | Path,
    out: str | Path,
    *,
    run_dir: str | Path | None = None,
    checkpoint: CheckpointName = "best",
    weights: WeightsName = "average",
    truth_path: str | Path | None = None,
    json_path: str | Path | None = None,
    **options: Any,
) -> tuple[ImputeResult, list[Path]]:
    """:func:`impute` of the array in ``input_path`` with the run in ``run_dir``
    (``checkpoint`` and ``weights`` as :func:`~pyrovae.api.load_run` takes them);
    the files written.

    ``out`` ending ``.npy`` gets the filled data, and with draws a file
    ``<out>-draws.npz`` (:func:`draws_path`) gets ``mean``, ``std``, ``lower``,
    ``upper`` and ``draws``; ``out`` ending ``.npz`` gets all of them (``draws`` only
    with draws).
    ``json_path`` gets :meth:`ImputeResult.to_dict`.
    """
    out = check_output_file(out, suffixes=OUT_SUFFIXES)
    for path in (json_path,) if json_path is not None else ():
        check_output_file(path)
    draws_file = draws_path(out) if out.suffix == ".npy" and options.get("draws", 0) else None
    check_distinct_files({"--out": out, "the draws' file": draws_file, "--json": json_path},
                         {"--input": input_path, "--truth": truth_path})  # fmt: skip
    x = _read_array(input_path, "--input")
    truth = None if truth_path is None else _read_array(truth_path, "--truth")
    _check_draws(options.get("draws", 0), options.get("particles", DEFAULT_PARTICLES))
    run = load_run(run_dir, device=options.get("device", "auto"), checkpoint=checkpoint,
                   weights=weights)  # fmt: skip
    result = impute(run, x, truth=truth, **options)
    arrays = {"mean": result.mean, "std": result.std, "lower": result.lower, "upper": result.upper}
    if result.draws is not None:
        arrays["draws"] = result.draws
    written = []
    if out.suffix == ".npz":
        written.append(_save(out, arrays))
    else:
        written.append(_save(out, {"mean": result.mean}))
        if result.draws is not None:
            written.append(_save(draws_path(out), arrays))
    if json_path is not None:
        atomic_write_text(json_path, json.dumps(result.to_dict(), indent=2) + "\n")
        written.append(Path(json_path))
    return result, written


def _read_array(path: str | Path, option: str) -> np.ndarray:
    if Path(path).suffix.lower() not in (".npy", ".npz"):
        raise DataError(f"{option} {path} must be a .npy or .npz array file")
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            return loaded
        with loaded:
            keys = list(loaded.files)
            key = next((k for k in ("x", "arr_0") if k in keys),
                       keys[0] if len(keys) == 1 else None)  # fmt: skip
            if key is None:
                held = ", ".join(keys) if keys else "no arrays"
                raise DataError(f"{option} {path} holds {held}: save the data under 'x'")
            return loaded[key]
    except _ARRAY_FILE_ERRORS as err:
        raise DataError(
            f"{option} {path}: cannot read a numpy array of numbers ({array_file_reason(err)})"
        ) from None


def _save(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    def write(handle: io.BufferedIOBase | Any) -> None:
        if path.suffix == ".npy":
            np.save(handle, arrays["mean"])
        else:
            savez: Any = np.savez  # numpy's stubs take no ** of arrays
            savez(handle, **arrays)

    atomic_write(path, write)
    return path
