"""Typed run configuration, serialized to ``config.json`` in every run directory.

A run is reproduced or resumed from its folder alone: the resolved config
(including the data shape read off the data, and every option of the model's
components) is written next to the checkpoint, and :meth:`RunConfig.load`
rebuilds it. The schema checks its own fields; the components check their
options (:mod:`pyrovae.model.spec`). Both run before any data is read or any
folder is created.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from pyrovae.components import MAX_COUNT
from pyrovae.errors import ConfigError

Binarize = Literal["dynamic", "static", "none"]
ElboName = Literal["meanfield", "trace"]
ObjectiveName = Literal["elbo", "iwae"]
DeviceName = Literal["auto", "cpu", "cuda"]
StreamName = Literal["auto", "yes", "no"]
LoggerName = Literal["none", "csv", "tensorboard"]
ScheduleName = Literal["constant", "cosine", "plateau"]
PrecisionName = Literal["fp32", "bf16"]

BINARIZE: tuple[str, ...] = ("dynamic", "static", "none")
#: The kinds of component a model is made of (see :mod:`pyrovae.components`).
COMPONENT_KINDS: tuple[str, ...] = ("network", "likelihood", "guide", "prior")
ELBOS: tuple[str, ...] = ("meanfield", "trace")
OBJECTIVES: tuple[str, ...] = ("elbo", "iwae")
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
STREAMS: tuple[str, ...] = ("auto", "yes", "no")
#: ``--logger``: where training figures go besides metrics.jsonl.
LOGGERS: tuple[str, ...] = ("none", "csv", "tensorboard")
#: ``--lr-schedule``: the learning rate over the epochs.
LR_SCHEDULES: tuple[str, ...] = ("constant", "cosine", "plateau")
#: ``--precision``: what the networks compute in during training steps
#: (:mod:`pyrovae.training.acceleration`).
PRECISIONS: tuple[str, ...] = ("fp32", "bf16")
#: What is trained (``--model``): a VAE, or a deterministic autoencoder (``ae``,
#: :mod:`pyrovae.model.autoencoder`), a conditional VAE (``cvae``) or Kingma et al.'s
#: semi-supervised M2 (``m2``); see :data:`pyrovae.model.build.MODEL_CLASSES`.
MODEL_KINDS: tuple[str, ...] = ("vae", "ae", "cvae", "m2")
#: Kinds that model a class label y and train on the data's labels.
LABELLED_KINDS: tuple[str, ...] = ("cvae", "m2")


def _choice(value: str, choices: tuple[str, ...], option: str) -> None:
    if value not in choices:
        raise ConfigError(f"{option} must be one of {', '.join(choices)}, got {value!r}")


#: What ``--channels`` converts images to: grayscale or RGB.
CHANNELS: tuple[int, ...] = (1, 3)
#: The largest ``--image-size`` (a side of 4096 pixels is far beyond what a VAE is trained on).
MAX_IMAGE_SIZE = 4096

#: Seeds, as every command takes them.
MAX_SEED = 2**32 - 1
#: The most images one ``pyrovae sample -n`` (or :func:`pyrovae.sample`) draws: 100000
#: MNIST images are 314 MB of float32.
MAX_SAMPLES = 100_000
#: The most ``--threads`` (torch's count is a C int, and each thread is started).
MAX_THREADS = 1024


def _positive(value: float, option: str, *, integer: bool = False, most: int = MAX_COUNT) -> None:
    if integer and (not isinstance(value, int) or isinstance(value, bool)):
        raise ConfigError(f"{option} must be a whole number, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{option} must be positive, got {value!r}")
    if integer and value > most:
        raise ConfigError(f"{option} must be at most {most}, got {value!r}")


@dataclass
class DataConfig:
    """Which data set, and how pixels are prepared for the likelihood.

    Parameters
    ----------
    dataset
        ``digits`` (default, bundled with scikit-learn), ``mnist``,
        ``fashion-mnist``, a ``.npy``/``.npz`` file or a folder of images.
    data_dir
        Folder holding the IDX files of MNIST / Fashion-MNIST, or CIFAR-10's
        ``cifar-10-batches-py/``.
    binarize
        For binary likelihoods: resample pixels as Bernoulli draws every batch
        (``dynamic``), once at load time (``static``), or not at all (``none``;
        the data must then already be binary).
    val_fraction
        Share of the training points held out as a validation split (with the
        run's seed), for every data set: scored at each evaluation, it picks
        the best checkpoint and drives ``patience``. 0 (default): none.
    test_fraction
        Share of a file's (or of Python data's) points held out for test, with
        the run's seed, where the data bring no test split of their own.
        (Configs written before the validation split existed called this
        ``val_fraction``; :meth:`RunConfig.from_dict` reads them so.)
    stream
        Read the training points of a ``.npy`` file or an image folder from
        disk a batch at a time (``yes``), whole into memory (``no``), or
        stream when they would take more than a quarter of the memory
        available (``auto``). Named data sets are held in memory.
    image_size
        Resize every image so that its shorter side is this many pixels and
        crop its centre to a square (torchvision's ``Resize`` and
        ``CenterCrop``); ``None`` keeps the images as they are (the images of
        a folder must then all be of one size).
    channels
        Convert every image to 1 (grayscale) or 3 (RGB) channels; ``None``
        keeps them (the images of a folder must then all be of one mode).
    memory
        For data passed from Python (``dataset`` is ``"<memory>"``), what
        they were, for information: shape, dtype and the sizes of the splits.
    display_range
        Recorded in training: ``[least, greatest]`` of the test set's values
        where they leave [0, 1] (a Gaussian likelihood on standardized data),
        the range the run's figures are drawn on and whose ends
        salt-and-pepper noise sets; ``None``: [0, 1], values beyond it clipped.
    """

    dataset: str = "digits"
    data_dir: str | None = None
    binarize: Binarize = "dynamic"
    val_fraction: float = 0.0
    stream: StreamName = "auto"
    image_size: int | None = None
    channels: int | None = None
    memory: dict[str, Any] | None = None
    display_range: list[float] | None = None
    test_fraction: float = 0.1
    #: Recorded in training on data read from files: the points of the training and test
    #: splits, ``[n_train, n_test]``, which ``--resume`` finds again or refuses.
    sizes: list[int] | None = None
    #: For ``--model m2``: keep this many class-balanced training labels (seeded), the
    #: rest unlabelled; ``None`` keeps the data's own (``-1`` marks an unlabelled point).
    labeled: int | None = None

    def validate(self) -> None:
        _choice(self.binarize, BINARIZE, "--binarize")
        shown = self.display_range
        if shown is not None and not (
            isinstance(shown, (list, tuple))
            and len(shown) == 2
            and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                for v in shown
            )
            and shown[0] < shown[1]
        ):
            raise ConfigError(f"data.display_range must be [least, greatest], got {shown!r}")
        if self.labeled is not None:
            _positive(self.labeled, "--labeled", integer=True)
        _choice(self.stream, STREAMS, "--stream")
        for option, fraction in (("--val-fraction", self.val_fraction),
                                 ("--test-fraction", self.test_fraction)):  # fmt: skip
            if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
                raise ConfigError(f"{option} must be a number, got {fraction!r}")
            if not 0.0 <= fraction < 1.0:
                raise ConfigError(f"{option} must be in [0, 1), got {fraction}")
        if self.image_size is not None:
            _positive(self.image_size, "--image-size", integer=True, most=MAX_IMAGE_SIZE)
        if self.channels is not None and self.channels not in CHANNELS:
            raise ConfigError(f"--channels must be 1 or 3, got {self.channels!r}")


@dataclass
class ModelConfig:
    """The generative model p(z) p(x|z) and the guide q(z|x), as a plain schema.

    ``network``, ``likelihood``, ``guide`` and ``prior`` name one component of
    each kind (``pyrovae components`` lists what is installed); ``options[kind]``
    holds that component's options, which the component declares, parses and
    checks itself (:func:`pyrovae.model.spec.resolve`); missing ones take its
    defaults. ``providers[kind]`` records the distribution that supplied each
    component, so that a run that needs a plugin says which. ``kind`` says what
    is trained with these components (:data:`MODEL_KINDS`). ``latent_dim`` is
    the size of z; ``data_shape``, the shape of one data point, is filled in
    from the data. ``missing`` is set when the training data hold missing values
    (NaN): the likelihood then scores observed values only and the encoder reads
    the values and their mask (:mod:`pyrovae.data.missing`), so a run trained on
    incomplete data is rebuilt with that encoder. This schema names no component
    and knows no option of one.
    """

    kind: str = "vae"
    network: str = "mlp"
    likelihood: str = "bernoulli"
    guide: str = "normal"
    prior: str = "normal"
    latent_dim: int = 16
    data_shape: tuple[int, ...] | None = None
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    providers: dict[str, str] = field(default_factory=dict)
    missing: bool = False
    #: The number of classes of a ``cvae`` or ``m2`` model, read from the data's labels.
    n_classes: int | None = None

    def validate(self) -> None:
        """Check the fields this schema itself defines."""
        if not isinstance(self.missing, bool):
            raise ConfigError(f"model.missing must be true or false, got {self.missing!r}")
        for kind in COMPONENT_KINDS:
            name = getattr(self, kind)
            if not isinstance(name, str) or not name:
                raise ConfigError(f"--{kind} must name a {kind}, got {name!r}")
        _choice(self.kind, MODEL_KINDS, "--model")
        _positive(self.latent_dim, "--latent-dim", integer=True)
        if self.n_classes is not None:
            _positive(self.n_classes, "the number of classes", integer=True)
        if self.data_shape is not None:
            for size in self.data_shape:
                _positive(size, "the data shape", integer=True)
        unknown = set(self.options) - set(COMPONENT_KINDS)
        if unknown or not all(isinstance(v, dict) for v in self.options.values()):
            raise ConfigError(
                f"model options must be keyed by {', '.join(COMPONENT_KINDS)}, "
                f"got {sorted(self.options)}"
            )


@dataclass
class TrainConfig:
    """Optimization: the ELBO, its β-weighting and annealing, Adam, the budget.

    ``beta`` weights the KL term (β-VAE); ``kl_warmup`` epochs raise the weight
    linearly from 0 to ``beta``. ``elbo`` is ``meanfield``
    (:class:`pyro.infer.TraceMeanField_ELBO`, analytic KL where it exists) or
    ``trace`` (:class:`pyro.infer.Trace_ELBO`); ``particles`` is the number of
    vectorized samples of z per data point. ``objective`` ``iwae`` trains on
    the importance-weighted bound with ``particles`` samples instead
    (Burda et al. 2016); ``elbo`` is then ignored. ``pyro_step`` runs every
    step through Pyro's ``differentiable_loss`` on traces of the model and
    guide; by default the step evaluates the same estimator directly from the
    model's distributions, checked against Pyro's on the first batch (see
    :mod:`pyrovae.training.step`).

    ``corrupt`` (``mask:P``, ``gaussian:SIGMA`` or ``salt-pepper:P``) trains a
    denoising model: the encoder reads a freshly corrupted copy of each batch,
    the likelihood scores the clean one (:mod:`pyrovae.model.corruption`).
    ``sparsity`` ρ adds ``sparsity_weight`` × Σ_j KL(ρ ‖ ρ̂_j) on the encoder's
    hidden activations to the loss (:mod:`pyrovae.model.sparsity`), reported
    apart from the ELBO. Both are checked by
    :func:`pyrovae.training.step.check_regularizers`.

    Conveniences: ``logger`` also writes the figures as CSV files or
    TensorBoard events; ``patience`` stops when the validation ELBO has not
    improved for that many evaluations (0: never); ``lr_schedule`` is
    ``constant``, ``cosine`` (annealed to 0 over ``epochs``) or ``plateau``
    (halved after 2 evaluations without a better validation, or else
    training, ELBO); ``clip_grad_norm`` clips the gradients' global norm (0:
    no clipping); ``max_time`` stops cleanly, with a resumable checkpoint,
    once the next epoch would overrun that many seconds (0: no limit);
    ``eval_every`` epochs pass between evaluations and checkpoints (the last
    epoch is always evaluated); ``eval_size`` test (and validation) points
    are scored at each (0: all).

    Quality: ``free_bits`` λ > 0 trains on Σ_j max(λ, KL_j), KL_j the KL of
    latent dimension j averaged over the batch, in place of the KL (Kingma et
    al. 2016, "Improved Variational Inference with Inverse Autoregressive
    Flow"); the reported ELBO stays the true ELBO
    (:mod:`pyrovae.inference.free_bits`). ``ema`` > 0 keeps an exponential
    moving average of the weights with that decay, used for every evaluation
    and saved as the checkpoint's model (:mod:`pyrovae.training.ema`).
    ``preset`` names the configuration the defaults came from
    (:mod:`pyrovae.presets`), for the record.

    Speed: ``precision`` ``bf16`` runs the encoder and decoder under bf16
    autocast in the training steps (the ELBO, weights and optimizer stay
    float32); ``compile`` compiles their ``forward`` with ``torch.compile``, and the
    parts the likelihood asks for (:mod:`pyrovae.training.acceleration`). Both are
    for GPUs (``compile`` also for the autoregressive likelihood on a CPU). ``threads`` is
    how many CPU threads torch's operators run on (``--threads``; ``None``:
    unchanged, torch's choice or ``OMP_NUM_THREADS``); recorded so that a
    resumed run keeps it (in one process: under torchrun each process keeps
    one thread unless ``--threads`` is given again).
    """

    objective: ObjectiveName = "elbo"
    elbo: ElboName = "meanfield"
    particles: int = 1
    beta: float = 1.0
    kl_warmup: int = 0
    lr: float = 1e-3
    batch_size: int = 128
    epochs: int = 30
    seed: int = 0
    device: DeviceName = "auto"
    pyro_step: bool = False
    corrupt: str | None = None
    sparsity: float | None = None
    sparsity_weight: float = 1.0
    logger: LoggerName = "none"
    patience: int = 0
    lr_schedule: ScheduleName = "constant"
    clip_grad_norm: float = 0.0
    max_time: float = 0.0
    eval_every: int = 1
    eval_size: int = 0
    #: ``--model m2``: weight of the classification loss -log q(y|x) per labelled point
    #: (Kingma et al. 2014's alpha); ``None``: Pyro's example's 46 scaled to the data size.
    aux_weight: float | None = None
    free_bits: float = 0.0
    ema: float = 0.0
    preset: str = "fast"
    precision: PrecisionName = "fp32"
    compile: bool = False
    threads: int | None = None

    def validate(self) -> None:
        self._validate_conveniences()
        _choice(self.objective, OBJECTIVES, "--objective")
        _choice(self.elbo, ELBOS, "--elbo")
        _choice(self.device, DEVICES, "--device")
        _positive(self.particles, "--particles", integer=True)
        _positive(self.batch_size, "--batch-size", integer=True)
        _positive(self.epochs, "--epochs", integer=True)
        _positive(self.lr, "--lr")
        # Pyro's poutine.scale needs a positive weight; beta = 0 is not a VAE anyway.
        _positive(self.beta, "--beta")
        if self.aux_weight is not None:
            _positive(self.aux_weight, "--aux-weight")
        if not isinstance(self.kl_warmup, int) or not 0 <= self.kl_warmup <= MAX_COUNT:
            raise ConfigError(
                f"--kl-warmup must be a whole number from 0 to {MAX_COUNT}, got {self.kl_warmup!r}"
            )
        # Training also seeds with seed + 1 and seed + epoch: far inside torch's 64 bits.
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"--seed must be a whole number, got {self.seed!r}")
        if not 0 <= self.seed <= MAX_SEED:
            raise ConfigError(f"--seed must be from 0 to {MAX_SEED}, got {self.seed}")

    def _validate_conveniences(self) -> None:
        _choice(self.logger, LOGGERS, "--logger")
        _choice(self.lr_schedule, LR_SCHEDULES, "--lr-schedule")
        _positive(self.eval_every, "--eval-every", integer=True)
        for option, count in (("--patience", self.patience), ("--eval-size", self.eval_size)):
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise ConfigError(f"{option} must be a whole number, 0 or more, got {count!r}")
        for option, value in (("--clip-grad-norm", self.clip_grad_norm),
                              ("--max-time", self.max_time)):  # fmt: skip
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{option} must be a number, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"{option} must be 0 (off) or positive, got {value!r}")
        self._validate_quality()

    def _validate_quality(self) -> None:
        from pyrovae.presets import PRESETS

        _choice(self.preset, tuple(PRESETS), "--preset")
        _choice(self.precision, PRECISIONS, "--precision")
        if not isinstance(self.compile, bool):
            raise ConfigError(f"--compile must be true or false, got {self.compile!r}")
        if self.threads is not None and (
            isinstance(self.threads, bool)
            or not isinstance(self.threads, int)
            or not 1 <= self.threads <= MAX_THREADS
        ):
            raise ConfigError(
                f"--threads must be a whole number from 1 to {MAX_THREADS}, got {self.threads!r}"
            )
        if isinstance(self.free_bits, bool) or not isinstance(self.free_bits, (int, float)):
            raise ConfigError(f"--free-bits must be a number, got {self.free_bits!r}")
        if not math.isfinite(self.free_bits) or self.free_bits < 0:
            raise ConfigError(f"--free-bits must be 0 (off) or positive, got {self.free_bits!r}")
        if self.free_bits and (self.objective != "elbo" or self.elbo != "meanfield"):
            raise ConfigError(
                "--free-bits replaces the analytic KL of the mean-field ELBO: "
                "train with --objective elbo --elbo meanfield, or leave out --free-bits"
            )
        if isinstance(self.ema, bool) or not isinstance(self.ema, (int, float)):
            raise ConfigError(f"--ema must be a number, got {self.ema!r}")
        if not 0.0 <= self.ema < 1.0:
            raise ConfigError(f"--ema must be a decay in [0, 1) (0: off), got {self.ema!r}")


#: The layout of ``config.json``; 2 since components declare their own options.
CONFIG_VERSION = 2


@dataclass
class RunConfig:
    """Everything needed to rebuild a run: data, model and training settings."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> RunConfig:
        """Raise :class:`ConfigError` on the first invalid value; return self."""
        self.data.validate()
        self.model.validate()
        self.train.validate()
        self._check_labelled()
        return self.check_validation()

    def _check_labelled(self) -> None:
        """Options of labelled model kinds, given to the kind that takes them."""
        kind = self.model.kind
        for option, value in (
            ("--labeled", self.data.labeled),
            ("--aux-weight", self.train.aux_weight),
        ):
            if value is not None and kind != "m2":
                raise ConfigError(f"{option} is for --model m2 (semi-supervised), not {kind}")
        if kind in LABELLED_KINDS and (self.train.corrupt or self.train.sparsity is not None):
            raise ConfigError(f"--corrupt and --sparsity train a vae or an ae, not --model {kind}")
        if kind != "vae" and self.train.free_bits:
            raise ConfigError(f"--free-bits trains a vae, not --model {kind}")
        if kind in LABELLED_KINDS and self.train.objective != "elbo":
            raise ConfigError(f"--model {kind} trains on the ELBO: leave out --objective")

    def to_dict(self) -> dict[str, Any]:
        raw = {"version": CONFIG_VERSION, **dataclasses.asdict(self)}
        if raw["data"]["display_range"] is None:  # data in [0, 1]: what earlier versions read
            del raw["data"]["display_range"]
        return raw

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RunConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error, missing ones take defaults.

        A config without a ``version`` is taken as the current one (hand-written
        configs); one of another version is refused with what to do.
        """
        raw = dict(raw)
        version = raw.pop("version", CONFIG_VERSION)
        old_model = {"arch", "hidden", "image_shape"} & set(raw.get("model", {}))
        if isinstance(version, int) and version > CONFIG_VERSION and not old_model:
            raise ConfigError(
                f"it was written by a newer pyrovae (config version {version}, this one reads "
                f"{CONFIG_VERSION}): read it with that version or a later one"
            )
        if version != CONFIG_VERSION or old_model:
            raise ConfigError(
                "it was written by an older pyrovae "
                f"(config version {1 if old_model else version}, "
                f"this one reads {CONFIG_VERSION}, where components carry their own options): "
                "train the run again"
            )
        raw["data"] = _with_test_fraction(raw.get("data", {}))
        parts: dict[str, Any] = {}
        for part in dataclasses.fields(cls):
            sub_cls = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}[part.name]
            section = raw.get(part.name, {})
            if not isinstance(section, dict):
                raise ConfigError(
                    f"the {part.name} section must be a table of options, got {section!r}"
                )
            values = dict(section)
            known = {f.name for f in dataclasses.fields(sub_cls)}
            unknown = set(values) - known
            if unknown:
                raise ConfigError(f"unknown {part.name} option(s): {', '.join(sorted(unknown))}")
            _check_types(sub_cls, values, part.name)
            if values.get("data_shape") is not None:
                values["data_shape"] = tuple(values["data_shape"])
            parts[part.name] = sub_cls(**values)
        unknown = set(raw) - set(parts)
        if unknown:
            raise ConfigError(f"unknown config section(s): {', '.join(sorted(unknown))}")
        return cls(**parts)

    def check_validation(self) -> RunConfig:
        """Options that need a validation split refuse a run without one; return self."""
        if self.train.patience and not self.data.val_fraction:
            raise ConfigError(
                "--patience stops on the validation ELBO: give --val-fraction F "
                "(e.g. 0.1) too, or leave out --patience"
            )
        return self

    def to_options(self) -> dict[str, Any]:
        """The config as one flat namespace of ``pyrovae train`` options, the way
        ``--config FILE.toml`` takes them (component options included; what is
        read off the data or recorded about it left out)."""
        flat: dict[str, Any] = {}
        for part in (self.data, self.model, self.train):
            for f in dataclasses.fields(part):
                if f.name not in _NOT_OPTIONS:
                    flat[f.name] = getattr(part, f.name)
        for kind in COMPONENT_KINDS:
            for name, value in self.model.options.get(kind, {}).items():
                flat.setdefault(name, value)
        return {name: value for name, value in flat.items() if value is not None}

    def save_toml(self, path: str | os.PathLike[str]) -> None:
        """Write :meth:`to_options` as TOML, atomically: ``pyrovae train --config`` reads it."""
        from pyrovae.files import atomic_write_text

        lines = [
            "# pyrovae train options of this run: `pyrovae train --config THIS_FILE` trains it",
            "# again (options given on the command line override these).",
        ]
        options = self.to_options()
        # Keyed by option name: --model sets ModelConfig.kind.
        lines += [f"{_OPTION_NAMES.get(name, name)} = {toml_value(value)}"
                  for name, value in options.items()]  # fmt: skip
        atomic_write_text(path, "\n".join(lines) + "\n")

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write as JSON, atomically (a crash leaves the old file or the new one)."""
        from pyrovae.files import atomic_write_text

        text = json.dumps(self.to_dict(), indent=2) + "\n"
        atomic_write_text(path, text)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> RunConfig:
        from pyrovae.errors import CheckpointError

        try:
            raw = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise CheckpointError(
                f"no config.json at {path}: not a pyrovae run directory"
            ) from None
        except (OSError, ValueError, UnicodeDecodeError) as err:
            raise CheckpointError(f"cannot read {path}: {err}") from None
        if not isinstance(raw, dict):
            raise CheckpointError(f"{path} is not a pyrovae config")
        try:
            config = cls.from_dict(raw)  # an older version's config is refused first
        except (ConfigError, TypeError) as err:
            raise CheckpointError(f"{path} is not a valid pyrovae config: {err}") from None
        # A run's config records the shape of its data points, read from the data.
        if config.model.data_shape is None:
            raise CheckpointError(
                f"{path} is not a valid pyrovae config: it does not record the shape of "
                "the data points (model.data_shape), which every run's config.json does"
            )
        # Every run's config.json records its sections whole: one left out (a hand edit)
        # would silently take the defaults, the digits for a missing data section.
        missing = [name for name in ("data", "model", "train") if name not in raw]
        if "data" in raw and isinstance(raw["data"], dict) and "dataset" not in raw["data"]:
            missing.append("data.dataset")
        if missing:
            raise CheckpointError(
                f"{path} is not a valid pyrovae config: it lacks {', '.join(missing)}, which "
                "every run's config.json records"
            )
        return config


#: Config fields whose ``pyrovae train`` option has another name.
_OPTION_NAMES = {"kind": "model"}

#: Config fields that are no ``pyrovae train`` option: read off the data, or records.
_NOT_OPTIONS = frozenset(
    {
        "memory",
        "sizes",
        "display_range",
        "data_shape",
        "options",
        "providers",
        "missing",
        "n_classes",
    }
)


def _check_types(sub_cls: type, values: dict[str, Any], section: str) -> None:
    """Refuse a value whose JSON type is not its field's (a hand-edited config.json):
    the checks and code downstream take the types as declared."""
    hints = get_type_hints(sub_cls)
    for name, value in values.items():
        if not _conforms(value, hints[name]):
            hint = hints[name]
            shown = hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")
            raise ConfigError(f"{section}.{name} must be of type {shown}, got {value!r}")


def _conforms(value: Any, hint: Any) -> bool:
    """Whether a value read from JSON has the type ``hint`` (literals: their base type;
    a whole number is a float too)."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        return any(_conforms(value, arg) for arg in args)
    if origin is Literal:
        return isinstance(value, tuple({type(arg) for arg in args}))
    if origin in (list, tuple):
        return isinstance(value, (list, tuple)) and all(_conforms(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(
            isinstance(k, str) and _conforms(v, args[1]) for k, v in value.items()
        )
    if hint in (int, float) and isinstance(value, bool):
        return False
    if hint is float:
        return isinstance(value, (int, float))
    return hint is Any or isinstance(value, hint)


def _with_test_fraction(data: Any) -> Any:
    """A ``data`` section written before the validation split: its ``val_fraction``
    was the test hold-out, which is ``test_fraction`` now (and no validation split)."""
    if not isinstance(data, dict) or "test_fraction" in data or "val_fraction" not in data:
        return data
    return {**data, "test_fraction": data["val_fraction"], "val_fraction": 0.0}


def toml_value(value: Any) -> str:
    """``value`` (text, a number, a flag, or a list or table of them) as a TOML value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)  # inf and nan are spelled the same in TOML
    if isinstance(value, str):
        # JSON's escapes (\\, \", \n, \uXXXX) are TOML's basic-string escapes.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):  # e.g. the import path and arguments of a module network
        items = [
            f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in value.items() if v is not None
        ]
        return "{" + ", ".join(items) + "}"
    raise ConfigError(f"cannot write {value!r} to a TOML config")
