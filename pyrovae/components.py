"""Components that describe themselves, and the registries that find them.

A component is one class (a likelihood, guide, prior or network) that states
its ``name``, its ``options`` (each an :class:`Option` with a parser, a
default and a help line) and what it can do (capabilities: class attributes
such as ``temperable``). Everything else is derived from those declarations:
the command line's options (:mod:`pyrovae.cli.options`), the config schema
and its validation (:meth:`Component.resolve_options`), the check of a run's
config when it is loaded, and the reference in ``docs/components.md``.

Components are found through entry points, the way pytest finds its plugins
(``pytest11``): the groups ``pyrovae.likelihoods``, ``pyrovae.guides``,
``pyrovae.priors`` and ``pyrovae.networks``. pyrovae's own components are
declared in its ``pyproject.toml`` under the same groups, so built-ins and an
installed plugin come through the same door. Code that is not packaged can
still :meth:`Registry.register` a class for the session.

Example
-------
A plugin package declares in its ``pyproject.toml``::

    [project.entry-points."pyrovae.likelihoods"]
    laplace = "pyrovae_laplace:LaplaceLikelihood"

and ``pyrovae train --likelihood laplace`` then lists its options in ``--help``.
"""

from __future__ import annotations

import inspect
import math
import numbers
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any, ClassVar, Generic, TypeVar

from pyrovae.errors import ComponentMissingError, ConfigError

#: The kinds of component, and the entry-point group of each.
GROUPS: dict[str, str] = {
    "likelihood": "pyrovae.likelihoods",
    "guide": "pyrovae.guides",
    "prior": "pyrovae.priors",
    "network": "pyrovae.networks",
}

Parser = Callable[[Any], Any]
#: The largest count any option takes: torch's sizes and Python's C-level
#: integers beyond this overflow rather than fail with a message.
MAX_COUNT = 2**31 - 1

#: What a component's name may be: one word as the command line and config.toml take it.
COMPONENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


# --------------------------------------------------------------------------- #
# Option values
# --------------------------------------------------------------------------- #


def positive_int(value: Any) -> int:
    """A whole number >= 1 (from an int or its text)."""
    number = _whole(value)
    if not 1 <= number <= MAX_COUNT:
        raise ValueError(f"must be a whole number from 1 to {MAX_COUNT}, got {value!r}")
    return number


def positive_float(value: Any) -> float:
    """A finite number > 0."""
    number = _float(value)
    if not number > 0:
        raise ValueError(f"must be positive, got {value!r}")
    return number


def sizes(value: Any) -> tuple[int, ...]:
    """Layer sizes: ``400``, ``"512,256"`` or ``[512, 256]`` -> ``(512, 256)``."""
    if isinstance(value, str):
        parts: Iterable[Any] = [p for p in value.replace(" ", "").split(",") if p]
    elif isinstance(value, int) and not isinstance(value, bool):
        parts = [value]
    elif isinstance(value, Sequence):
        parts = value
    else:
        raise ValueError(f"expected layer sizes like 400 or 512,256, got {value!r}")
    out = tuple(positive_int(p) for p in parts)
    if not out:
        raise ValueError("needs at least one layer size, like 400 or 512,256")
    return out


def choice(*names: str) -> Parser:
    """One of ``names``."""

    def parse(value: Any) -> str:
        if value not in names:
            raise ValueError(f"must be one of {', '.join(names)}, got {value!r}")
        return str(value)

    parse.__name__ = "|".join(names)
    return parse


def choice_or_positive_float(*names: str) -> Parser:
    """One of ``names``, or a positive number (``"0.1"`` -> ``0.1``)."""

    def parse(value: Any) -> str | float:
        if value in names:
            return str(value)
        try:
            return positive_float(value)
        except ValueError:
            raise ValueError(
                f"must be {', '.join(names)} or a positive number, got {value!r}"
            ) from None

    parse.__name__ = "|".join(names) + "|NUMBER"
    return parse


def _whole(value: Any) -> int:
    """An int from an integer (numpy's too), a float with no fraction (``5.0`` from
    Python) or text of an integer."""
    if isinstance(value, bool):
        raise ValueError(f"must be a whole number, got {value!r}")
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        if math.isfinite(number) and number.is_integer():
            return int(number)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise ValueError(f"must be a whole number, got {value!r}")


def _float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"must be a finite number, got {value!r}")
    return number


#: Names shown for the built-in parsers in help texts and docs.
_TYPE_NAMES: dict[Parser, str] = {
    positive_int: "INTEGER",
    positive_float: "FLOAT",
    sizes: "SIZES",
    str: "TEXT",
}


@dataclass(frozen=True)
class Option:
    """One option of a component: its name, parser, default and help line.

    Parameters
    ----------
    name
        A Python identifier (``obs_scale``); the command line spells it
        ``--obs-scale``, a TOML or JSON config ``obs_scale``.
    default
        The value when the option is not given (already parsed).
    help
        One line for ``--help`` and the docs.
    parse
        Turns a given value (text from the command line, or a JSON value)
        into the option's value; raises ``ValueError`` with the reason.
    metavar
        How ``--help`` shows the value (default: from the parser).
    sizes_model
        Whether a larger value makes the model larger (more parameters), for the
        message that names what to lower when it does not fit in memory; ``None``:
        a count or a list of sizes does.
    """

    name: str
    default: Any
    help: str
    parse: Parser = str
    metavar: str | None = None
    sizes_model: bool | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def shown_as(self) -> str:
        """The value's name in ``--help``: ``INTEGER``, ``SIZES``, ``pixel|shared|NUMBER``."""
        if self.metavar:
            return self.metavar
        return _TYPE_NAMES.get(self.parse, getattr(self.parse, "__name__", "VALUE").upper())

    def value(self, given: Any, owner: str) -> Any:
        """``given`` parsed, or a one-line :class:`ConfigError` naming the flag and ``owner``."""
        try:
            return self.parse(given)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{self.flag} of {owner}: {err}") from None

    def to_json(self, value: Any) -> Any:
        """``value`` as JSON stores it (tuples become lists)."""
        return list(value) if isinstance(value, tuple) else value


# --------------------------------------------------------------------------- #
# Components
# --------------------------------------------------------------------------- #


class Component:
    """Mixin of every pluggable class: name, options and capabilities, declared.

    Subclasses set ``kind`` (in their kind's base class), ``name`` and
    ``options``; the constructor receives the resolved options as keyword
    arguments. Capabilities are class attributes that operations ask for
    (:func:`require`), never a test of the component's name.
    """

    kind: ClassVar[str] = ""
    name: ClassVar[str] = ""
    options: ClassVar[tuple[Option, ...]] = ()

    @classmethod
    def title(cls) -> str:
        """``"likelihood 'gaussian'"``: how messages name the component."""
        return f"{cls.kind} {cls.name!r}"

    @classmethod
    def summary(cls) -> str:
        """The first paragraph of the class docstring, on one line, its reST literals
        (````x````) written as Markdown's (```x```) for the terminal and components.md."""
        paragraph = re.split(r"\n\s*\n", inspect.cleandoc(cls.__doc__ or ""))[0]
        line = " ".join(line.strip() for line in paragraph.splitlines())
        return re.sub(r"``([^`]+)``", r"`\1`", line)

    @classmethod
    def option(cls, name: str) -> Option | None:
        return next((o for o in cls.options if o.name == name), None)

    @classmethod
    def resolve_options(cls, given: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Every option's value: ``given`` parsed, defaults for the rest.

        Raises
        ------
        ConfigError
            A value that does not parse, or a name the component does not declare.
        """
        given = dict(given or {})
        unknown = sorted(set(given) - {o.name for o in cls.options})
        if unknown:
            declared = ", ".join(o.name for o in cls.options) or "none"
            raise ConfigError(
                f"{cls.title()} has no option {', '.join(unknown)} (its options: {declared})"
            )
        return {
            o.name: o.value(given[o.name], cls.title()) if o.name in given else o.default
            for o in cls.options
        }

    @classmethod
    def check(cls, options: Mapping[str, Any], context: Any) -> None:
        """Checks that need more than one option, or the rest of the model (the
        :class:`~pyrovae.model.context.ModelContext`); raise ``ConfigError``. None by default."""


def require(component: Any, capability: str, operation: str) -> None:
    """Refuse ``operation`` in one line when ``component`` lacks ``capability``.

    Example
    -------
    >>> require(vae.prior, "temperable", "sampling at a temperature other than 1")  # doctest: +SKIP
    """
    if not getattr(component, capability, False):
        title = component.title() if hasattr(component, "title") else type(component).__name__
        raise ConfigError(
            f"{title} does not support {operation} (it does not declare {capability})"
        )


# --------------------------------------------------------------------------- #
# Registries
# --------------------------------------------------------------------------- #

C = TypeVar("C", bound=type)


@dataclass
class _Entry:
    name: str
    provider: str
    load: Callable[[], Any]
    loaded: Any = None


class Registry(Generic[C]):
    """The components of one kind: those installed under its entry-point group,
    plus any registered at run time.

    Entry points are read on first use and loaded one by one when asked for,
    so listing names imports no plugin.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.group = GROUPS[kind]
        self._entries: dict[str, _Entry] | None = None

    def _all(self) -> dict[str, _Entry]:
        if self._entries is None:
            entries: dict[str, _Entry] = {}
            for point in metadata.entry_points(group=self.group):
                dist = point.dist.name if point.dist is not None else point.module
                if point.name in entries and entries[point.name].provider != dist:
                    raise ConfigError(
                        f"{self.kind} {point.name!r} is declared by both "
                        f"{entries[point.name].provider} and {dist}: uninstall one"
                    )
                entries[point.name] = _Entry(point.name, dist, point.load)
            if not any(e.provider == "pyrovae" for e in entries.values()):
                raise ConfigError(
                    f"pyrovae's own {self.kind}s are not installed (no entry points in the "
                    f"group {self.group}): install the package with `pip install -e .`"
                )
            self._entries = entries
        return self._entries

    def register(self, cls: C) -> C:
        """Add ``cls`` (a :class:`Component` with this kind) for this session.

        For code that is not an installed plugin; a run that uses it needs the
        same registration before it can be loaded again.
        """
        name = getattr(cls, "name", "")
        if not name or getattr(cls, "kind", None) != self.kind:
            raise ValueError(f"{cls!r} is not a {self.kind} component with a name")
        if not isinstance(name, str) or not COMPONENT_NAME.fullmatch(name):
            raise ValueError(
                f"{self.kind} name {name!r} must be letters, digits, '-', '_' or '.', "
                "starting with a letter or digit (as the command line takes it)"
            )
        for option in getattr(cls, "options", ()):
            if not isinstance(option, Option) or not option.name.isidentifier():
                raise ValueError(
                    f"{self.kind} {name!r}: each option must be an Option whose name is a "
                    f"Python identifier, got {option!r}"
                )
        entries = self._all()
        if name in entries and entries[name].loaded is not cls:
            raise ValueError(
                f"{self.kind} {name!r} is registered already (by {entries[name].provider}): "
                f"choose another name, or unregister it first"
            )
        entries[name] = _Entry(name, cls.__module__, lambda: cls, cls)
        return cls

    def unregister(self, name: str) -> None:
        """Remove a component registered at run time (tests use this)."""
        self._all().pop(name, None)

    def names(self) -> tuple[str, ...]:
        """Names of every available component: pyrovae's in the order it declares them,
        then the others'."""
        entries = self._all()
        return tuple(sorted(entries, key=lambda n: entries[n].provider != "pyrovae"))

    def provider(self, name: str) -> str:
        """The distribution (or, for run-time registrations, the module) providing ``name``."""
        return self._all()[name].provider if name in self._all() else ""

    def get(self, name: str, provider: str | None = None) -> C:
        """The class called ``name``.

        Raises
        ------
        ComponentMissingError
            When no such component is available; the message names the
            choices, or the distribution ``provider`` that would supply it.
        """
        entry = self._all().get(name)
        if entry is None:
            if provider and provider != "pyrovae":
                raise ComponentMissingError(
                    f"{self.kind} {name!r} comes from {provider}, which is not installed here "
                    f"(or registers it at run time): install or import it first"
                )
            raise ComponentMissingError(
                f"unknown {self.kind} {name!r}: choose one of {', '.join(self.names())}"
            )
        if entry.loaded is None:
            try:
                entry.loaded = entry.load()
            except Exception as err:  # a broken plugin: say which, in one line
                raise ComponentMissingError(
                    f"{self.kind} {name!r} from {entry.provider} failed to load: "
                    f"{type(err).__name__}: {err}"
                ) from None
            if getattr(entry.loaded, "name", None) != name:
                raise ComponentMissingError(
                    f"the entry point {self.kind} {name!r} of {entry.provider} loads "
                    f"{entry.loaded!r}, whose declared name is "
                    f"{getattr(entry.loaded, 'name', None)!r}"
                )
        return entry.loaded  # type: ignore[no-any-return]

    def classes(self) -> list[C]:
        """Every available component class (loading them all)."""
        return [self.get(name) for name in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._all()
