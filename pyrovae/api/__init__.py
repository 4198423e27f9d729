"""The notebook-facing API: load a run, sample from it, reconstruct with it.

The CLI is a thin layer over these functions and :func:`pyrovae.train.train`.

Example
-------
>>> import pyrovae
>>> run = pyrovae.load_run()              # the latest run under runs/
>>> images = pyrovae.sample(run, n=64)    # (64, C, H, W) in [0, 1]
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import torch
from torch import nn

from pyrovae.api.classify import (
    check_diagnosable,
    evaluated_metrics,
    report_accuracy,
    sample_images,
)
from pyrovae.api.classify import (
    classify as classify,
)
from pyrovae.api.denoise import CorruptedReconstructions as CorruptedReconstructions
from pyrovae.api.denoise import reconstruct_corrupted as reconstruct_corrupted
from pyrovae.api.latent import (  # noqa: F401 (re-exported)
    check_loaded_run,
    check_outputs_spare_the_data,
    encode,
    explore,
    probe,
)
from pyrovae.config import MAX_SAMPLES, RunConfig
from pyrovae.data.dataset import MEMORY, ArrayData, is_image_shape
from pyrovae.data.idx import TORCHVISION_CLASS
from pyrovae.data.load import dataset_key
from pyrovae.data.memory import DataSource, from_python
from pyrovae.data.missing import data_has_missing
from pyrovae.data.pixels import to_unit_float
from pyrovae.data.prepare import prepare_data, prepare_source, split_images
from pyrovae.errors import CheckpointError, ConfigError, DataError, check_count, first_line
from pyrovae.files import (
    BEST_CHECKPOINT_NAME,
    CHECKPOINT_NAME,
    CONFIG_NAME,
    atomic_write_text,
    check_output_file,
)
from pyrovae.model.build import make_model
from pyrovae.model.networks.base import Networks
from pyrovae.model.networks.module import module_spec
from pyrovae.model.spec import model_config
from pyrovae.model.vae import VAE
from pyrovae.reports.diagnose import DiagnosisResult, diagnose
from pyrovae.reports.evaluate import (
    DEFAULT_METRICS,
    DEFAULT_N,
    EvaluationResult,
    evaluate,
    parse_memory_budget,
    parse_metrics,
)
from pyrovae.reports.figures import save_run_figures
from pyrovae.runtime import forked_rng, isolated_rng, resolve_device
from pyrovae.runtime import threads as on_threads
from pyrovae.training import run as training_run
from pyrovae.training.checkpoint import load_checkpoint
from pyrovae.training.loop import Finish, Logger, TrainResult, check_in_support

if TYPE_CHECKING:
    import arviz as az

DEFAULT_RUNS_ROOT = Path("runs")

#: Which checkpoint of a run to load (``--checkpoint``): the best validation ELBO, or the last.
CheckpointName = Literal["best", "last"]
#: Which weights of a run trained with ``--ema`` to load (``--weights``).
WeightsName = Literal["average", "trained"]

#: The temperatures :func:`sample` accepts. Below the lower end the scales of
#: a prior's Gaussian part (down to 1e-4) underflow float32; far above the
#: upper end codes lie so far outside what the decoder was trained on that its
#: outputs overflow.
TEMPERATURE_RANGE = (1e-6, 100.0)

_logger = logging.getLogger("pyrovae")

#: Images decoded at once by :func:`sample` and :func:`reconstruct`, so that
#: memory stays bounded for any ``n``.
BATCH_SIZE = 1024


def configure(config: RunConfig | None = None, /, **options: Any) -> RunConfig:
    """A run config from keyword options, the way ``pyrovae.train(...)`` takes them.

    Every field of :class:`~pyrovae.config.DataConfig`,
    :class:`~pyrovae.config.TrainConfig` and :class:`~pyrovae.config.ModelConfig`
    is a keyword (``dataset="digits", epochs=2, latent_dim=8``; ``model="m2"``, as
    the command line spells it, is ``kind``), and so is every option of the chosen
    components (``obs_scale=0.1``, ``flows=2``; ``pyrovae
    components`` lists them). With ``config`` the options change a copy of it.

    Raises
    ------
    ConfigError
        An option that is no field and that no chosen component takes; the
        message names the components that would take it.

    Example
    -------
    >>> config = configure(epochs=2, likelihood="gaussian", obs_scale=0.1, guide="iaf")
    >>> config.train.epochs, config.model.options["likelihood"]
    (2, {'obs_scale': 0.1})
    """
    config = RunConfig() if config is None else config
    if "model" in options:  # the command line's and config.toml's name of ModelConfig.kind
        if "kind" in options:
            raise ConfigError("give model= or kind= (the same option), not both")
        options["kind"] = options.pop("model")
    sections: dict[str, dict[str, Any]] = {"data": {}, "train": {}}
    model_options: dict[str, Any] = {}
    for name, value in options.items():
        section = next((s for s in sections if name in _field_names(s)), None)
        if section is None:
            model_options[name] = value
        else:
            sections[section][name] = value
    return dataclasses.replace(
        config,
        data=dataclasses.replace(config.data, **sections["data"]),
        train=dataclasses.replace(config.train, **sections["train"]),
        model=model_config(config.model, **model_options),
    )


def _field_names(section: str) -> set[str]:
    return {f.name for f in dataclasses.fields(type(getattr(RunConfig(), section)))}


def train(
    config: RunConfig | None = None,
    out: str | Path | None = None,
    *,
    data: DataSource | None = None,
    test_data: DataSource | None = None,
    encoder: nn.Module | None = None,
    decoder: nn.Module | None = None,
    progress: bool = True,
    log: Logger = print,
    **options: Any,
) -> TrainResult:
    """Train a new VAE into the run folder ``out`` (default: a new one under ``runs/``)
    and draw its figures (samples, reconstructions, loss curve).

    Parameters
    ----------
    config
        A run config; default :class:`~pyrovae.config.RunConfig` (digits, Bernoulli).
    out
        The run folder; it must not hold a run already (see :func:`resume`).
    data
        Your own data instead of ``dataset``: a tensor or NumPy array
        ``(N, ...)`` of any shape (images ``(N, C, H, W)`` or ``(N, H, W)``,
        vectors ``(N, D)``), a :class:`torch.utils.data.Dataset` whose items
        are a tensor/array or an ``(x, label)`` pair, or a
        :class:`~torch.utils.data.DataLoader`, of which only the dataset is
        kept (the run batches and shuffles with its own ``batch_size`` and
        seed, in this process). Values are checked as a file's are (finite;
        in [0, 1] or ``uint8`` 0..255 for a binary likelihood; within the
        likelihood's support). The run records ``dataset: "<memory>"`` and the
        data's shape, dtype and sizes (``config.data.memory``); :func:`load_run`
        and :func:`sample` work on it, and :func:`resume`, :func:`evaluate_run`,
        :func:`diagnose_run` and :func:`reconstruct` take ``data=`` (and
        ``test_data=``) to be given the data again.
    test_data
        Held-out data, of any kind ``data`` takes, with points of the same
        shape. Without it the option ``test_fraction`` (default 0.1, as for
        files) of ``data`` is held out, chosen with the run's ``seed``.
    encoder, decoder
        Your own networks (``network="module"``), given together:
        ``encoder`` maps ``(batch, *data_shape)`` to features ``(batch, F)``,
        ``decoder`` maps codes ``(batch, latent_dim)`` to the likelihood's
        parameters ``(batch, *data_shape)``. The run records their import
        paths and ``__init__`` arguments (stored as attributes of the same
        names, as scikit-learn estimators do), so that :func:`load_run` and the
        command line rebuild them; see :mod:`pyrovae.model.networks.module`.
    progress, log
        A progress bar per epoch; where the per-epoch lines go.
    **options
        Fields and component options that override ``config``
        (:func:`configure`): ``pyrovae.train(epochs=2, likelihood="gaussian")``.

    The caller's random streams, torch thread count and matplotlib backend are
    left as they were. See :func:`pyrovae.training.run.train` for the run
    folder, the lock and what is kept when something fails.

    Example
    -------
    >>> import pyrovae
    >>> result = pyrovae.train(epochs=2, latent_dim=8, out="runs/mine", progress=False)
    >>> result.final["test_elbo"]  # doctest: +SKIP
    """
    modules = _given_networks(encoder, decoder)
    if modules is not None:
        specs = {role: module_spec(module, role) for role, module in modules._asdict().items()}
        options = {"network": "module", **specs, **options}
    if data is not None:
        if "dataset" in options:
            raise ConfigError("give data= or dataset=, not both")
        options = {"dataset": MEMORY, **options}
    elif test_data is not None:
        raise ConfigError("test_data= needs data= (the training data) too")
    config = configure(config, **options)
    source = None if data is None else _source(config, data, test_data)
    with _callers_state_kept(config.train.device):
        return training_run.train(
            config, out, progress=progress, log=log, finish=_figures(log), modules=modules,
            source=source,
        )  # fmt: skip


def _source(config: RunConfig, data: DataSource, test_data: DataSource | None) -> ArrayData:
    """Data passed from Python, split as the run's config says (checked before any folder)."""
    config.validate()
    return from_python(
        data, test_data, val_fraction=config.data.test_fraction, seed=config.train.seed
    )


def _figures(log: Logger) -> Finish:
    """The run's figures; a line in the log where the data are not images to draw."""

    def finish(
        vae: VAE, test: torch.Tensor, history: list[dict[str, Any]], run_dir: Path
    ) -> list[Path]:
        if not is_image_shape(tuple(test.shape[1:])):
            log(
                f"data points of shape {tuple(test.shape[1:])} are not images: "
                "no samples.png or reconstructions.png, only the loss curve"
            )
        return save_run_figures(vae, test, history, run_dir)

    return finish


def _given_networks(encoder: nn.Module | None, decoder: nn.Module | None) -> Networks | None:
    if encoder is None and decoder is None:
        return None
    if encoder is None or decoder is None:
        raise ConfigError("give both encoder= and decoder=, or neither")
    for role, module in (("encoder", encoder), ("decoder", decoder)):
        if not isinstance(module, nn.Module):
            raise ConfigError(f"{role}= must be a torch.nn.Module, got {type(module).__name__}")
    return Networks(encoder, decoder)


def resume(
    run_dir: str | Path | Run,
    *,
    epochs: int | None = None,
    device: str | None = None,
    lr: float | None = None,
    max_time: float | None = None,
    particles: int | None = None,
    progress: bool = True,
    log: Logger = print,
    data: DataSource | None = None,
    test_data: DataSource | None = None,
    precision: str | None = None,
    compile: bool | None = None,
    threads: int | None = None,
) -> TrainResult:
    """Continue the run in ``run_dir`` (see :func:`pyrovae.training.run.resume`) and
    draw its figures; a finished run whose figures are missing gets them drawn.

    A run trained on data passed from Python (``pyrovae.train(data=X)``) is
    given them again as ``data=`` (and ``test_data=``), split as when it was
    trained; a run of a file or named set takes no ``data=``. ``precision``
    (``"fp32"``, ``"bf16"``) and ``compile`` change how its steps run from
    here on (:mod:`pyrovae.training.acceleration`). ``threads`` is the CPU
    thread count from here on (the run's own by default). ``run_dir`` may be a
    :class:`Run` from :func:`load_run`: its folder is resumed.
    """
    run_dir = run_folder(run_dir)
    source = None
    if data is not None:
        config = RunConfig.load(Path(run_dir) / CONFIG_NAME)
        if config.data.dataset != MEMORY:
            raise ConfigError(
                f"the run in {run_dir} was trained on {config.data.dataset}, which it reads "
                "again: leave out data= (it is for runs trained on data passed from Python)"
            )
        source = _source(config, data, test_data)
    with _callers_state_kept(device or "auto"):
        return training_run.resume(
            run_dir,
            epochs=epochs,
            device=device,
            lr=lr,
            max_time=max_time,
            particles=particles,
            progress=progress,
            log=log,
            finish=_figures(log),
            source=source,
            precision=precision,
            compile=compile,
            threads=threads,
        )


@contextmanager
def _callers_state_kept(device: str) -> Iterator[None]:
    """Training seeds the random streams: the caller's (and its thread count) come back."""
    with forked_rng(device), on_threads(torch.get_num_threads()):
        yield


@dataclass
class Run:
    """A trained VAE with the config and per-epoch metrics of its run folder."""

    run_dir: Path
    config: RunConfig
    vae: VAE
    history: list[dict[str, Any]]
    #: Which checkpoint the VAE was loaded from: ``"best"`` or ``"last"``, and its epoch.
    checkpoint: CheckpointName = "last"
    epoch: int = 0
    #: Which weights: ``"average"`` (the EMA of a run trained with ``--ema``) or ``"trained"``.
    weights: WeightsName = "trained"

    @property
    def device(self) -> torch.device:
        return next(self.vae.parameters()).device

    def loaded(self) -> dict[str, Any]:
        """What was loaded, for the files a command writes: the run folder, the
        checkpoint, its epoch and the weights."""
        return {"run_dir": str(self.run_dir), "checkpoint": self.checkpoint, "epoch": self.epoch,
                "weights": self.weights}  # fmt: skip

    def data(
        self, data: DataSource | None = None, test_data: DataSource | None = None
    ) -> ArrayData:
        """The run's data set, prepared as in training, on the run's device.

        ``data`` (and ``test_data``) are data passed from Python, as
        :func:`train` takes them: needed for a run trained on such data, and
        scored instead of the run's data set otherwise (points of the run's shape).
        """
        binary = self.vae.likelihood.binary
        if data is None:
            prepared = prepare_data(self.config, self.device, binary=binary)
            self._check_unchanged(prepared)
        else:
            source = _source(self.config, data, test_data)
            if source.data_shape != self.config.model.data_shape:
                raise ConfigError(
                    f"the run models points of shape {self.config.model.data_shape}, "
                    f"but data= has points of shape {source.data_shape}"
                )
            prepared = prepare_source(source, self.config, self.device, binary=binary)
        # A file may have changed since training; points from Python are new to the run.
        check_in_support(self.vae, prepared, self.config)
        if not self.vae.missing and data_has_missing(prepared):
            likelihood = self.vae.likelihood
            if not likelihood.maskable:  # neither impute nor a run on these data would take them
                raise DataError(
                    f"the data hold missing values (NaN), but {likelihood.unmaskable()}"
                )
            fill = (
                "fill them with `pyrovae impute` first, or "
                if self.config.model.kind == "vae"
                else ""
            )
            raise DataError(
                "the data hold missing values (NaN), but the run was trained on complete "
                f"data and cannot score or encode them: {fill}train a run on these data"
            )
        return prepared

    def _check_unchanged(self, prepared: ArrayData) -> None:
        """Refuse the run's data file read with another point shape; warn when it holds
        other numbers of points than at training (``data.sizes``): its splits are others."""
        trained, dataset = self.config.model.data_shape, self.config.data.dataset
        if trained is not None and tuple(trained) != tuple(prepared.data_shape):
            raise DataError(
                f"the run was trained on points of shape {tuple(trained)}, but "
                f"{dataset} now has {tuple(prepared.data_shape)}"
            )
        then = self.config.data.sizes
        now = [int(prepared.train.shape[0]), int(prepared.test.shape[0])]
        if then is not None and list(then) != now:
            warnings.warn(
                f"{dataset} has changed since the run was trained ({then[0]} + {then[1]} "
                f"points, train + test; now {now[0]} + {now[1]}): its splits are not the "
                "run's, and what is scored here is the points it holds now",
                UserWarning,
                stacklevel=3,
            )

    def split(
        self,
        split: str,
        data: DataSource | None = None,
        test_data: DataSource | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The points and labels of ``split`` (``test`` or ``train``) as evaluations
        score them (:func:`pyrovae.data.prepare.split_images`); ``data`` as :meth:`data`."""
        prepared = self.data(data, test_data)
        return split_images(self.config, prepared, split, binary=self.vae.likelihood.binary)


def latest_run(root: str | Path = DEFAULT_RUNS_ROOT) -> Path:
    """The run folder under ``root`` whose checkpoint was written last."""
    root = Path(root)
    checkpoints = sorted(root.glob(f"*/{CHECKPOINT_NAME}"), key=lambda p: p.stat().st_mtime)
    if not checkpoints:
        raise CheckpointError(
            f"no trained run under {root}/; train one with `pyrovae train` or pass --run DIR"
        )
    return checkpoints[-1].parent


#: A run folder (``None``: :func:`latest_run`), or a :class:`Run` from :func:`load_run`:
#: evaluated as it was loaded; :func:`load_run` given one reads its folder again.
RunSource = str | Path | Run | None


def run_folder(run_dir: RunSource) -> Path:
    """The folder of ``run_dir`` (see :data:`RunSource`)."""
    if run_dir is None:
        return latest_run()
    if isinstance(run_dir, Run):
        return run_dir.run_dir
    if not isinstance(run_dir, (str, Path)):
        raise ConfigError(
            f"expected a run folder (a str or Path) or a Run from load_run, "
            f"got {type(run_dir).__name__}"
        )
    return Path(run_dir)


def _loaded(
    run_dir: RunSource, *, device: str, checkpoint: CheckpointName, weights: WeightsName
) -> Run:
    """A :class:`Run` given is used as it was loaded (its checkpoint, weights and device);
    a folder is loaded with ``checkpoint``, ``weights`` and ``device``."""
    if isinstance(run_dir, Run):
        return run_dir
    return load_run(run_dir, device=device, checkpoint=checkpoint, weights=weights)


def load_run(
    run_dir: RunSource = None,
    device: str = "auto",
    checkpoint: CheckpointName = "best",
    weights: WeightsName = "average",
) -> Run:
    """Rebuild the VAE of ``run_dir`` (default: :func:`latest_run`; a :class:`Run` is
    loaded again from its folder) from a checkpoint.

    ``checkpoint="best"`` (default) takes the epoch with the best validation
    ELBO of a run trained with a validation split (``--val-fraction``), and the
    last checkpoint of a run without one; ``"last"`` the last checkpoint.
    ``weights="average"`` (default) takes the moving average of the weights of
    a run trained with ``--ema``, ``"trained"`` the weights the optimizer left
    (the same training, scored without its average); a run without an EMA has
    only the trained ones. What was taken is logged (logger ``pyrovae``: INFO
    where the run had a choice, DEBUG otherwise) and kept in
    :attr:`Run.checkpoint`, :attr:`Run.epoch` and :attr:`Run.weights`.
    """
    if checkpoint not in CHECKPOINT_CHOICES:
        raise ConfigError(f"--checkpoint must be best or last, got {checkpoint!r}")
    if weights not in WEIGHT_CHOICES:
        raise ConfigError(f"--weights must be average or trained, got {weights!r}")
    run_dir = run_folder(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"no run directory at {run_dir}")
    config = RunConfig.load(run_dir / CONFIG_NAME)
    best = run_dir / BEST_CHECKPOINT_NAME
    chosen: CheckpointName = "best" if checkpoint == "best" and best.is_file() else "last"
    state = load_checkpoint(best if chosen == "best" else run_dir / CHECKPOINT_NAME)
    try:
        with forked_rng("cpu"):  # the initial weights, overwritten below, draw from torch's RNG
            vae = make_model(config.validate().model)
    except ConfigError as err:  # a component that is missing, or cannot be rebuilt
        raise CheckpointError(f"cannot load the run in {run_dir}: {first_line(err)}") from None
    # An EMA's checkpoint holds the average as "model", the trained weights as "train_model".
    averaged = "train_model" in state or config.train.ema > 0
    if weights == "trained" and averaged and "train_model" not in state:
        raise CheckpointError(
            f"the {chosen} checkpoint of {run_dir} holds only the averaged weights of its "
            "epoch (written before best checkpoints kept the trained ones); --checkpoint "
            "last has the trained weights of the last epoch"
        )
    try:
        vae.load_state_dict(state["train_model" if weights == "trained" and averaged else "model"])
    except (KeyError, RuntimeError) as err:
        raise CheckpointError(
            f"checkpoint in {run_dir} does not match its config: {first_line(err)}"
        ) from None
    bad = [name for name, value in vae.state_dict().items() if not torch.isfinite(value).all()]
    if bad:
        raise CheckpointError(
            f"checkpoint in {run_dir} holds NaN or infinite parameters ({bad[0]}"
            f"{f' and {len(bad) - 1} more' if len(bad) > 1 else ''}); it cannot be used"
        )
    vae.to(resolve_device(device)).eval()
    history = list(state.get("history", []))
    epoch = int(state.get("epoch", 0))
    loaded: WeightsName = "average" if averaged and weights == "average" else "trained"
    # Said where there is a choice (a validation split, an EMA); a detail otherwise.
    level = logging.INFO if best.is_file() or averaged else logging.DEBUG
    lost_best = checkpoint == "best" and chosen == "last" and config.data.val_fraction > 0
    if lost_best:  # trained with a validation split, yet its best checkpoint is gone
        level = logging.WARNING
    line = _loaded_line(run_dir, chosen, checkpoint, epoch, history, lost_best=lost_best)
    _logger.log(level, line + (_WEIGHTS_NOTE[loaded] if averaged else ""))
    return Run(run_dir=run_dir, config=config, vae=vae, history=history, checkpoint=chosen,
               epoch=epoch, weights=loaded)  # fmt: skip


#: What ``load_run(checkpoint=...)`` and ``--checkpoint`` take.
CHECKPOINT_CHOICES: tuple[CheckpointName, ...] = get_args(CheckpointName)

#: What ``load_run(weights=...)`` and ``--weights`` take.
WEIGHT_CHOICES: tuple[WeightsName, ...] = get_args(WeightsName)

#: The end of the loaded line of a run trained with an EMA, by the weights taken.
_WEIGHTS_NOTE = {
    "average": ", with the moving average of its weights (--weights trained for the trained ones)",
    "trained": ", with its trained weights, not their moving average",
}


def _loaded_line(
    run_dir: Path,
    chosen: str,
    asked: str,
    epoch: int,
    history: list[dict[str, Any]],
    *,
    lost_best: bool = False,
) -> str:
    """The log line saying which checkpoint of ``run_dir`` was loaded."""
    if chosen == "best":
        val = history[-1].get("val_elbo") if history else None
        figure = "" if val is None else f", validation ELBO {val:.3f}"
        return (
            f"using the best checkpoint of {run_dir} (epoch {epoch}{figure}; "
            "--checkpoint last for the last)"
        )
    why = " (no validation split, so no best one)" if asked == "best" else ""
    if lost_best:
        why = f" ({BEST_CHECKPOINT_NAME} is missing, though the run has a validation split)"
    return f"using the last checkpoint of {run_dir} (epoch {epoch}){why}"


def sample(
    run: Run,
    n: int = 64,
    *,
    temperature: float = 1.0,
    mean: bool = True,
    seed: int | None = None,
    progress: bool = False,
    label: int | None = None,
) -> torch.Tensor:
    """``n`` generated data points ``(n, *data_shape)`` on the CPU: for a binary or
    continuous-Bernoulli likelihood images in [0, 1], for a Gaussian (or another
    likelihood) values of its support, which may leave [0, 1].

    ``temperature`` scales the prior's spread (< 1: more typical images); a
    prior that cannot be tempered (:attr:`pyrovae.model.priors.base.Prior.temperable`)
    is refused any temperature but 1. ``mean`` returns E[x|z] rather than a
    draw from p(x|z). Images are decoded :data:`BATCH_SIZE` at a time, with a
    progress bar if ``progress``. ``label`` draws that class from a ``cvae`` or
    ``m2`` run (by default a CVAE draws the classes in turn, M2 from p(y)).
    """
    check_loaded_run(run)
    n = check_count(n, "n", 1, MAX_SAMPLES)
    check_temperature(temperature)
    prior = run.vae.prior
    if temperature != 1.0 and not prior.temperable:
        model = run.config.model
        raise ConfigError(
            f"prior {model.prior!r} (with guide {model.guide!r}) cannot be sampled at a "
            "temperature other than 1; leave out --temperature"
        )
    with isolated_rng(run.device, seed):
        images = torch.cat(
            [
                sample_images(run.vae, size, temperature=temperature, mean=mean, label=label).cpu()
                for size in _progress(_batch_sizes(n), progress, "sampling")
            ]
        )
    _check_finite(images, temperature)
    return images


def check_temperature(temperature: float) -> float:
    """``temperature`` if it is within :data:`TEMPERATURE_RANGE`, else a :class:`ConfigError`."""
    low, high = TEMPERATURE_RANGE
    number = isinstance(temperature, (int, float)) and not isinstance(temperature, bool)
    if not (number and math.isfinite(temperature) and low <= temperature <= high):
        raise ConfigError(
            f"--temperature must be a number from {low:g} to {high:g} "
            f"(1 samples the prior as trained), got {temperature}"
        )
    return temperature


def reconstruct(
    run: Run,
    n: int = 16,
    *,
    split: str = "test",
    mean: bool = True,
    seed: int | None = None,
    progress: bool = False,
    data: DataSource | None = None,
    test_data: DataSource | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` points of ``split`` and their reconstructions, both on the CPU.

    A split that holds fewer than ``n`` points gives all of them: the length
    of the result is the number of points shown. ``data`` and ``test_data``:
    as :meth:`Run.data` (required for a run trained on data passed from Python).
    """
    check_loaded_run(run)
    n = check_count(n, "n")
    if split not in ("test", "train"):
        raise ConfigError(f"split must be 'test' or 'train', got {split!r}")
    prepared = run.data(data, test_data)
    originals = to_unit_float({"test": prepared.test, "train": prepared.train}[split][:n])
    parts = []
    with isolated_rng(run.device, seed):
        start = 0
        for size in _progress(_batch_sizes(originals.shape[0]), progress, "reconstructing"):
            batch = originals[start : start + size]
            parts.append(run.vae.reconstruct(batch, mean=mean).cpu())
            start += size
    reconstructions = torch.cat(parts)
    _check_finite(reconstructions, 1.0)
    return originals.cpu(), reconstructions


def _batch_sizes(n: int) -> list[int]:
    return [min(BATCH_SIZE, n - start) for start in range(0, n, BATCH_SIZE)]


def _progress(sizes: list[int], progress: bool, what: str) -> Iterable[int]:
    if not progress or len(sizes) < 2:
        return sizes
    from tqdm.auto import tqdm

    # disable=None: shown on a terminal only, as training's bars.
    return tqdm(sizes, desc=what, unit="batch", leave=False, disable=None)


def _check_finite(images: torch.Tensor, temperature: float) -> None:
    """Refuse NaN or infinite pixels rather than write them as an image."""
    bad = int((~torch.isfinite(images)).sum())
    if not bad:
        return
    if temperature != 1.0:
        raise ConfigError(
            f"the decoder gave {bad} non-finite pixel values at temperature {temperature:g}; "
            "use a temperature nearer 1"
        )
    raise CheckpointError(
        f"the decoder gave {bad} non-finite pixel values: the run's parameters are not usable "
        "(did its training diverge?)"
    )


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The per-epoch rows of ``metrics.jsonl``."""
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def evaluate_run(
    run_dir: RunSource = None,
    *,
    split: str = "test",
    k: int | None = None,
    n: int | None = DEFAULT_N,
    metrics: str | Sequence[str] = DEFAULT_METRICS,
    gaps: int = 0,
    device: str = "auto",
    seed: int | None = 0,
    json_path: str | Path | None = None,
    progress: bool = False,
    data: DataSource | None = None,
    test_data: DataSource | None = None,
    memory_budget: int | str | None = None,
    checkpoint: CheckpointName = "best",
    weights: WeightsName = "average",
) -> EvaluationResult:
    """Evaluate the first ``n`` images of a trained run's ``split`` (all: ``None``)
    with :func:`pyrovae.reports.evaluate.evaluate`.

    The images are those :meth:`Run.split` gives (a
    binary likelihood's training split binarized once, with a fixed seed).
    Writes the result as JSON to ``json_path`` when given. ``seed`` seeds the
    draws without changing the caller's RNG state. ``data`` and ``test_data``:
    as :meth:`Run.data` (required for a run trained on data passed from Python).
    ``k``: draws per image (default :func:`pyrovae.reports.evaluate.default_k`).
    ``metrics``: what to compute (:data:`pyrovae.reports.evaluate.METRICS`, a
    list or ``"logpx,elbo"``). ``memory_budget``: bytes (or ``"256M"``) the
    importance-sampling draws of one batch may take; default a share of the
    device's free memory, capped on the CPU
    (:func:`pyrovae.inference.importance.default_memory_budget`).
    ``checkpoint`` and ``weights``: which weights are scored, as :func:`load_run`
    takes them (``weights="trained"`` scores a run trained with ``--ema`` without
    its average: the same training, to measure what the average is worth).
    """
    if split not in ("test", "train"):
        raise ConfigError(f"--split must be test or train, got {split!r}")
    # Bad names and sizes fail before the run is loaded.
    parse_metrics(metrics)
    k = None if k is None else check_count(k, "k")
    n = None if n is None else check_count(n, "n", 2)
    gaps = check_count(gaps, "gaps", 0)
    budget = parse_memory_budget(memory_budget)
    with isolated_rng(device, seed):
        run = _loaded(run_dir, device=device, checkpoint=checkpoint, weights=weights)
        if json_path is not None:
            # Before the evaluation, which can take long, rather than after it.
            check_output_file(json_path)
            check_outputs_spare_the_data(run.config, {"--json": json_path})
        images, labels = run.split(split, data, test_data)
        if n is not None:
            images = images[:n]
        chosen, gaps, note = evaluated_metrics(run.config, parse_metrics(metrics), gaps)
        result = evaluate(
            run.vae,
            images,
            k,
            split=split,
            metrics=chosen,
            gaps=gaps,
            memory_budget=budget,
            progress=progress,
        )
        result.warnings += [note] if note else []
        report_accuracy(result, run.vae, images, labels)
    if json_path is not None:
        text = json.dumps(result.to_dict() | {"run": run.loaded()}, indent=2) + "\n"
        atomic_write_text(json_path, text)
    return result


def diagnose_run(run_dir: RunSource = None, **options: Any) -> az.InferenceData:
    """Diagnose a trained run and return the ArviZ ``InferenceData`` it wrote to
    ``diagnostics.nc``: ``az.loo``, ``az.waic``, ``az.compare``, ``az.summary`` and
    ``az.plot_ppc`` take it as it is.

    ``options`` are those of :func:`diagnose_report`, which returns everything
    measured (the verdict, k̂, the NUTS comparison, the files written) with this
    ``InferenceData`` as its ``inference_data``.
    """
    result = diagnose_report(run_dir, **options)
    assert result.inference_data is not None  # diagnose always builds it
    return result.inference_data


def diagnose_report(
    run_dir: RunSource = None,
    *,
    out: str | Path | None = None,
    split: str = "test",
    n: int = 100,
    draws: int = 1000,
    nuts: int = 4,
    nuts_draws: int = 100,
    chains: int = 4,
    full_netcdf: bool = False,
    device: str = "auto",
    seed: int | None = 0,
    progress: bool = False,
    data: DataSource | None = None,
    test_data: DataSource | None = None,
    checkpoint: CheckpointName = "best",
    weights: WeightsName = "average",
) -> DiagnosisResult:
    """Diagnose a trained run's ``split`` with :func:`pyrovae.reports.diagnose.diagnose`
    and return what it measured; ``out`` defaults to ``RUN/diagnostics``.

    The images are those :meth:`Run.split` gives (``data`` and ``test_data``
    as :meth:`Run.data`), with the class names of the named data sets. ``seed``
    seeds the draws without changing the caller's RNG state. The result's
    ``inference_data`` is the ArviZ ``InferenceData`` written to
    ``diagnostics.nc`` (``az.loo``, ``az.summary``, ``az.plot_ppc`` take it as
    it is); ``full_netcdf`` keeps every draw in it. ``checkpoint`` and ``weights``:
    which weights are diagnosed, as :func:`load_run` takes them.
    """
    if split not in ("test", "train"):
        raise ConfigError(f"--split must be test or train, got {split!r}")
    with isolated_rng(device, seed):
        run = _loaded(run_dir, device=device, checkpoint=checkpoint, weights=weights)
        check_diagnosable(run.config)
        images, labels = run.split(split, data, test_data)
        return diagnose(
            run.vae,
            images,
            out if out is not None else run.run_dir / "diagnostics",
            labels=labels,
            class_names=_class_names(run.config),
            n=n,
            draws=draws,
            nuts=nuts,
            nuts_draws=nuts_draws,
            nuts_warmup=nuts_draws,
            chains=chains,
            title=f"pyrovae diagnostics: {run.run_dir}",
            metadata={**run.loaded(), "config": run.config.to_dict(), "split": split},
            full_netcdf=full_netcdf,
            progress=progress,
        )


def _class_names(config: RunConfig) -> list[str] | None:
    """The class names of a named data set (torchvision's, e.g. Fashion-MNIST's
    ``"T-shirt/top"``), or ``None``: labels are then shown as numbers."""
    name = TORCHVISION_CLASS.get(dataset_key(config.data.dataset))
    if name is None:
        return None
    import torchvision.datasets

    return list(getattr(torchvision.datasets, name).classes)
