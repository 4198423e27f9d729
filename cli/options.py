"""Command-line options generated from the components' own declarations.

Every option any installed component declares (:class:`pyrovae.components.Option`)
becomes one flag of ``pyrovae train``: ``obs_scale`` -> ``--obs-scale``. A
name several components declare (``--flows`` of the flow guides and the flow
prior) is one flag that goes to each chosen component that takes it. The
options are read from the registries the first time a command needs its
parameters (``--help`` or a run), so ``pyrovae --help`` imports nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

#: The kinds of component, with the flag that chooses each (``--arch`` is the old name).
KIND_FLAGS: dict[str, tuple[str, ...]] = {
    "network": ("--network", "--arch"),
    "likelihood": ("--likelihood",),
    "guide": ("--guide",),
    "prior": ("--prior",),
}


class RegistryChoice(click.Choice):
    """A ``click.Choice`` over the installed components of one kind, read on use.

    ``pyrovae --help`` then needs no torch import; ``pyrovae train --help``
    lists whatever is installed, plugins included, and components registered
    later in the session (the names are read again on every use).
    """

    def __init__(self, kind: str) -> None:
        self._kind = kind
        super().__init__((), case_sensitive=True)

    @property  # type: ignore[override]
    def choices(self) -> Sequence[str]:
        from pyrovae.model.spec import REGISTRIES

        return REGISTRIES[self._kind].names()

    @choices.setter
    def choices(self, value: Sequence[str]) -> None:  # click's __init__ assigns it
        pass


def kind_option(kind: str, default: str, help: str) -> Any:
    """The option choosing the ``kind`` component (``--likelihood``, ``--network``...)."""
    return click.option(
        *KIND_FLAGS[kind], kind, type=RegistryChoice(kind), default=default, show_default=True,
        help=help,
    )  # fmt: skip


def component_options() -> list[click.Option]:
    """One click option per distinct option name of every installed component.

    Values stay text (``None`` when not given): each chosen component parses
    them with its own parser, so a bad value is a one-line error naming the
    component.
    """
    from pyrovae.model.spec import REGISTRIES

    declared: dict[str, list[tuple[Any, Any]]] = {}
    for registry in REGISTRIES.values():
        for cls in registry.classes():
            for option in cls.options:
                declared.setdefault(option.name, []).append((cls, option))
    return [_click_option(name, users) for name, users in sorted(declared.items())]


def _click_option(name: str, users: list[tuple[Any, Any]]) -> click.Option:
    first = users[0][1]
    return click.Option(
        [first.flag, name],
        default=None,
        metavar=first.shown_as,
        help=f"{first.help} [{_used_by(users)}]",
    )


def _used_by(users: list[tuple[Any, Any]]) -> str:
    """``guide iaf, planar; prior flow; default 128``: who takes an option, and its default."""
    by_default: dict[str, dict[str, list[str]]] = {}
    for cls, option in users:
        kinds = by_default.setdefault(_shown(option.default), {})
        kinds.setdefault(cls.kind, []).append(cls.name)
    return "; ".join(
        "; ".join(f"{kind} {', '.join(names)}" for kind, names in kinds.items())
        + f": default {default}"
        for default, kinds in by_default.items()
    )


def _shown(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return "none" if value is None else str(value)


class ComponentCommand(click.Command):
    """A click command whose parameters are its own followed by the components' options
    (:func:`component_options`), generated when they are needed (``--help`` and
    parsing, not ``pyrovae --help``), so components registered since count too."""

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        if not hasattr(self, "_own_params"):
            self._own_params = list(self.params)
        own = {flag for param in self._own_params for flag in getattr(param, "opts", ())}
        generated = _installed_options()
        for option in generated:
            clash = own.intersection(option.opts)
            if clash:
                raise click.UsageError(
                    f"an installed component declares {', '.join(sorted(clash))}, which "
                    f"`pyrovae {self.name}` has already: the plugin must rename it"
                )
        self.params = [*self._own_params, *generated]
        return super().get_params(ctx)


def _installed_options() -> list[click.Option]:
    """:func:`component_options`, or one line naming what is wrong with an installed
    component (a broken plugin would otherwise end every `train`, `--help` too, in a
    traceback)."""
    from pyrovae.errors import PyrovaeError, describe_exception, first_line

    try:
        return component_options()
    except PyrovaeError as err:
        raise click.ClickException(first_line(err)) from None
    except (AttributeError, TypeError, ValueError) as err:  # a plugin class that is no component
        raise click.ClickException(
            f"an installed component is broken ({describe_exception(err)}): fix or uninstall "
            "its plugin (`pyrovae components` lists them)"
        ) from None


def component_values(options: dict[str, Any]) -> dict[str, Any]:
    """Pop the components' option values (set or not) out of a command's ``options``."""
    names = {option.name for option in component_options()}
    return {name: options.pop(name) for name in list(options) if name in names}
