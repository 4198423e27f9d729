"""A model config resolved against the installed components.

:class:`~pyrovae.config.ModelConfig` names one component of each kind
(:data:`KINDS`) and holds their options; it knows nothing of what the
components are. :func:`resolve` looks each name up in its registry, has each
component parse and check its own options (:meth:`Component.resolve_options`,
:meth:`Component.check`), and returns the classes with their options and the
:class:`~pyrovae.model.context.ModelContext` they are built in.

:func:`route_options` is how the command line and ``pyrovae.train(**kwargs)``
pass options: one flat namespace (``obs_scale=0.1, flows=2``), each option
going to every chosen component that declares it; an option no chosen
component declares is an error that names who would take it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pyrovae.components import Component, Registry
from pyrovae.config import COMPONENT_KINDS, ModelConfig
from pyrovae.errors import ConfigError
from pyrovae.model.context import ModelContext
from pyrovae.model.guides.base import GUIDES
from pyrovae.model.likelihoods.base import LIKELIHOODS
from pyrovae.model.networks.base import NETWORKS
from pyrovae.model.priors.base import PRIORS

#: The registry of each kind, in the order a model is built.
REGISTRIES: dict[str, Registry[Any]] = {
    "network": NETWORKS,
    "likelihood": LIKELIHOODS,
    "guide": GUIDES,
    "prior": PRIORS,
}
KINDS: tuple[str, ...] = COMPONENT_KINDS


@dataclass(frozen=True)
class ModelSpec:
    """The chosen class of each kind, its resolved options, and the model context."""

    classes: Mapping[str, type[Component]]
    options: Mapping[str, dict[str, Any]]
    context: ModelContext


def component_class(config: ModelConfig, kind: str) -> type[Any]:
    """The class of the ``kind`` component ``config`` names; a one-line error naming the
    distribution that provides it when it is not installed."""
    return REGISTRIES[kind].get(getattr(config, kind), config.providers.get(kind))


def resolve(config: ModelConfig) -> ModelSpec:
    """Look up, parse and check every component of ``config``.

    ``config.data_shape`` may still be ``None`` (before the data are read):
    checks that need it are then left to the build.

    Raises
    ------
    ConfigError
        An unknown component (:class:`~pyrovae.errors.ComponentMissingError`), an
        option that does not parse, or a combination a component refuses.
    """
    config.validate()
    classes = {kind: component_class(config, kind) for kind in KINDS}
    options = {kind: classes[kind].resolve_options(config.options.get(kind)) for kind in KINDS}
    shape = tuple(config.data_shape) if config.data_shape is not None else None
    context = ModelContext(data_shape=shape, n_latent=config.latent_dim, classes=classes)
    for kind in KINDS:
        classes[kind].check(options[kind], context)
    return ModelSpec(classes=classes, options=options, context=context)


def completed(config: ModelConfig) -> ModelConfig:
    """``config`` with every option of its components written out (defaults included, as
    JSON values) and the distribution providing each component recorded: what a run
    saves, so that it is rebuilt as trained even if a default changes."""
    spec = resolve(config)
    options = {
        kind: {
            option.name: option.to_json(spec.options[kind][option.name])
            for option in spec.classes[kind].options
        }
        for kind in KINDS
    }
    providers = {kind: REGISTRIES[kind].provider(getattr(config, kind)) for kind in KINDS}
    return dataclasses.replace(config, options=options, providers=providers)


def route_options(chosen: Mapping[str, str], given: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Hand each option in ``given`` to every chosen component that declares it.

    ``chosen`` maps each kind to a component name. Values of ``None`` count
    as not given (the command line's unset options).

    Raises
    ------
    ConfigError
        An option that no chosen component declares: the message names the
        components that would take it.
    """
    classes = {kind: REGISTRIES[kind].get(name) for kind, name in chosen.items()}
    routed: dict[str, dict[str, Any]] = {kind: {} for kind in classes}
    for name, value in given.items():
        if value is None:
            continue
        takers = [kind for kind, cls in classes.items() if cls.option(name) is not None]
        if not takers:
            raise ConfigError(_unused_option_message(name, classes))
        for kind in takers:
            routed[kind][name] = value
    return routed


def model_config(base: ModelConfig | None = None, /, **values: Any) -> ModelConfig:
    """A :class:`ModelConfig` from one flat namespace, the way users write options.

    The fields of ``ModelConfig`` (``network``, ``likelihood``, ``guide``,
    ``prior``, ``latent_dim``, ``data_shape``) are taken as they are; every
    other keyword is a component option, routed by :func:`route_options`.
    With ``base``, ``values`` change that config: its fields and options stay
    unless given again, and its options that no newly chosen component takes
    are dropped (``guide="normal"`` on an IAF config drops ``flows``).

    Example
    -------
    >>> config = model_config(likelihood="gaussian", obs_scale=0.1, guide="iaf", flows=2)
    >>> config.options["guide"]
    {'flows': 2}
    >>> model_config(config, flows=3).options["guide"]
    {'flows': 3}
    """
    fields = {f.name for f in dataclasses.fields(ModelConfig)} - {"options", "providers"}
    given = {k: v for k, v in values.items() if k in fields and v is not None}
    base = ModelConfig() if base is None else base
    chosen_config = dataclasses.replace(base, **given, options={}, providers={})
    chosen = {kind: getattr(chosen_config, kind) for kind in KINDS}
    kept = {
        name: value
        for kind in KINDS
        if getattr(base, kind) == chosen[kind]
        for name, value in base.options.get(kind, {}).items()
    }
    options = route_options(
        chosen, {**kept, **{k: v for k, v in values.items() if k not in fields}}
    )
    return dataclasses.replace(chosen_config, options={k: v for k, v in options.items() if v})


def _unused_option_message(name: str, classes: Mapping[str, type[Component]]) -> str:
    flag = "--" + name.replace("_", "-")
    chosen = ", ".join(cls.title() for cls in classes.values())
    users = [
        cls.title()
        for kind, registry in REGISTRIES.items()
        for cls in registry.classes()
        if cls.option(name) is not None
    ]
    hint = f"; it is an option of {', '.join(users)}" if users else ""
    return f"{flag} is not an option of the chosen {chosen}{hint}"
