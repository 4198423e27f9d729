"""Your own encoder and decoder ``nn.Module``s, recorded so that a run can rebuild them.

``pyrovae.train(encoder=MyEncoder(...), decoder=MyDecoder(...))`` trains with
the given modules and records, for each, an import path and the arguments it
was built with (:func:`module_spec`); :class:`ModuleNetwork` rebuilds them from
that record when the run is loaded, so ``load_run`` and the command line work
on the run. From the command line: ``--network module --encoder
pkg.nets:Encoder --decoder pkg.nets:Decoder`` (classes built without
arguments, or ``'{"class": "pkg.nets:Encoder", "kwargs": {"width": 64}}'``).

The shape contract
------------------
- encoder: ``(batch, *data_shape)`` -> ``(batch, n_features)``, any
  ``n_features`` (read from an ``out_features`` attribute, or from one probe
  call on zeros); the guide head maps the features to q(z|x)'s parameters.
- decoder: ``(batch, n_latent)`` -> ``(batch, *data_shape)``, the
  likelihood's parameters (logits for Bernoulli, the mean for Gaussian).

Only ``(batch, ...)`` inputs reach your modules: leading dimensions (particles)
are flattened into the batch and restored around them.

The arguments are read back the scikit-learn way (``get_params``): each
``__init__`` argument must be stored as an attribute of the same name, with a
JSON value. A module that does not allow that can be packaged as a network
plugin instead (entry-point group ``pyrovae.networks``).
"""

from __future__ import annotations

import importlib
import inspect
import json
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from pyrovae.components import Option
from pyrovae.errors import ConfigError, first_line
from pyrovae.model.context import ModelContext
from pyrovae.model.networks.base import Network, Networks


def parse_spec(value: Any) -> dict[str, Any]:
    """``"pkg.mod:Class"``, a JSON object text, or a dict -> ``{"class", "kwargs"}``."""
    if isinstance(value, str):
        text = value.strip()
        value = json.loads(text) if text.startswith("{") else {"class": text, "kwargs": {}}
    if not isinstance(value, Mapping) or not isinstance(value.get("class"), str):
        raise ValueError(
            'must be an import path "package.module:Class" or {"class": ..., "kwargs": {...}}'
        )
    if ":" not in value["class"]:
        raise ValueError(f"import path {value['class']!r} must look like package.module:Class")
    kwargs = value.get("kwargs", {})
    if not isinstance(kwargs, Mapping):
        raise ValueError("kwargs must be a JSON object")
    return {"class": value["class"], "kwargs": dict(kwargs)}


def module_spec(module: nn.Module, role: str) -> dict[str, Any]:
    """How to rebuild ``module``: its import path and ``__init__`` arguments.

    Raises
    ------
    ConfigError
        When an argument is not stored under its own name, is not JSON, or
        rebuilding from the record gives other parameter shapes.
    """
    cls = type(module)
    if "<locals>" in cls.__qualname__:
        raise ConfigError(
            f"cannot record how to rebuild the {role} {cls.__name__}: it is defined inside a "
            "function; define it at the top level of a module"
        )
    spec = {"class": f"{cls.__module__}:{cls.__qualname__}", "kwargs": _init_arguments(module)}
    if cls.__module__ == "__main__":
        warnings.warn(
            f"the {role} {cls.__qualname__} is defined in __main__ (a script or notebook): "
            "this run can be loaded only where that definition runs first; define it in an "
            "importable module to load the run anywhere",
            stacklevel=3,
        )
    rebuilt = _instantiate(spec, role)
    ours = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()}
    if ours != theirs:
        raise ConfigError(
            f"the {role} {spec['class']} rebuilt from its recorded arguments {spec['kwargs']} "
            "has other parameters than the one given: store every __init__ argument as an "
            "attribute of the same name"
        )
    return spec


def _init_arguments(module: nn.Module) -> dict[str, Any]:
    cls = type(module)
    kwargs: dict[str, Any] = {}
    for name, parameter in inspect.signature(cls.__init__).parameters.items():
        if name == "self" or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if not hasattr(module, name):
            raise ConfigError(
                f"cannot record how to rebuild {cls.__qualname__}: its __init__ argument "
                f"{name!r} is not stored as an attribute of the same name (the scikit-learn "
                "convention); store it, or package the network as a plugin"
            )
        value = getattr(module, name)
        try:
            kwargs[name] = json.loads(json.dumps(value))
        except (TypeError, ValueError):
            raise ConfigError(
                f"cannot record how to rebuild {cls.__qualname__}: argument {name!r} "
                f"({type(value).__name__}) is not a JSON value"
            ) from None
    return kwargs


def _instantiate(spec: Mapping[str, Any], role: str) -> nn.Module:
    path = spec["class"]
    module_name, _, qualname = path.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as err:
        raise ConfigError(
            f"cannot import the {role} {path} ({type(err).__name__}: {err}): define it in an "
            "importable module and install or import it first"
        ) from None
    try:
        module = target(**spec["kwargs"])
    except Exception as err:  # the user's constructor: any failure, one line
        raise ConfigError(f"cannot build the {role} {path}: {type(err).__name__}: {err}") from None
    if not isinstance(module, nn.Module):
        raise ConfigError(f"the {role} {path} is not a torch.nn.Module")
    return module


class BatchFlattened(nn.Module):
    """Calls ``module`` on ``(batch, ...)`` inputs whatever the leading dimensions.

    ``in_dims`` trailing dimensions make one input; the leading ones are
    flattened into one batch dimension before the call and restored after.
    """

    def __init__(self, module: nn.Module, in_dims: int, out_shape: tuple[int, ...] | None) -> None:
        super().__init__()
        self.module = module
        self.in_dims = in_dims
        self.out_shape = out_shape

    def forward(self, value: torch.Tensor) -> torch.Tensor:
        lead = value.shape[: value.dim() - self.in_dims]
        out = self.module(value.reshape(-1, *value.shape[len(lead) :]))
        if self.out_shape is not None and tuple(out.shape[1:]) != self.out_shape:
            raise ConfigError(
                f"the decoder returned {tuple(out.shape)} for a batch of {out.shape[0]} codes; "
                f"it must return (batch, {', '.join(map(str, self.out_shape))})"
            )
        return out.reshape(*lead, *out.shape[1:])


class ModuleNetwork(Network):
    """Your own encoder and decoder nn.Modules, rebuilt from their import paths."""

    name = "module"
    builds_any_shape = False  # your encoder reads (batch, *data_shape): missing values as 0
    options = (
        Option(
            "encoder", None, "Encoder: package.module:Class, or a JSON spec.", parse_spec, "CLASS"
        ),
        Option(
            "decoder", None, "Decoder: package.module:Class, or a JSON spec.", parse_spec, "CLASS"
        ),
    )

    @classmethod
    def check(cls, options: Mapping[str, Any], context: ModelContext) -> None:
        for role in ("encoder", "decoder"):
            if options.get(role) is None:
                raise ConfigError(f"{cls.title()} needs --{role} package.module:Class")

    def __init__(self, *, modules: Networks | None = None, **options: Any) -> None:
        super().__init__(**options)
        self.given = modules

    def build(self, context: ModelContext) -> Networks:
        if self.given is not None:
            encoder, decoder = self.given
        else:
            encoder = _instantiate(self.values["encoder"], "encoder")
            decoder = _instantiate(self.values["decoder"], "decoder")
        n_features = _feature_size(encoder, context.shape)
        wrapped = BatchFlattened(encoder, len(context.shape), None)
        wrapped.out_features = n_features  # type: ignore[assignment]
        decoded = BatchFlattened(decoder, 1, tuple(context.shape))
        _probe_decoder(decoded, context.n_latent)
        return Networks(wrapped, decoded)


def _probe_decoder(decoder: BatchFlattened, n_latent: int) -> None:
    """One call on zero codes, so that a decoder that does not take ``(batch, latent_dim)``
    or returns another shape is a one-line error before training, not a traceback in it."""
    with torch.no_grad():
        try:
            decoder(torch.zeros(2, n_latent))
        except ConfigError:
            raise
        except Exception as err:
            raise ConfigError(
                f"the decoder failed on codes of shape (2, {n_latent}) (latent_dim "
                f"{n_latent}): {type(err).__name__}: {first_line(err, 200)}"
            ) from None


def _feature_size(encoder: nn.Module, data_shape: tuple[int, ...]) -> int:
    """The encoder's feature count, from one call on zeros (checked against its
    ``out_features`` where it declares one, which serves when the call fails)."""
    declared = getattr(encoder, "out_features", None)
    declared = declared if isinstance(declared, int) else None
    with torch.no_grad():
        try:
            features = encoder(torch.zeros(2, *data_shape))
        except Exception as err:
            if declared is not None:
                return declared
            raise ConfigError(
                f"the encoder failed on a batch of shape (2, {', '.join(map(str, data_shape))}): "
                f"{type(err).__name__}: {err}"
            ) from None
    if features.dim() != 2 or features.shape[0] != 2:
        raise ConfigError(
            f"the encoder must return (batch, n_features), got {tuple(features.shape)} "
            f"for a batch of 2; flatten its output"
        )
    if features.dtype != torch.float32 or not torch.isfinite(features).all():
        raise ConfigError(
            f"the encoder must return finite float32 features, got {features.dtype} "
            f"{'values' if torch.isfinite(features.double()).all() else 'NaN or inf'} "
            "for a batch of zeros"
        )
    if declared is not None and declared != features.shape[1]:
        raise ConfigError(
            f"the encoder declares out_features = {declared} but returns "
            f"{features.shape[1]} features"
        )
    return int(features.shape[1])
