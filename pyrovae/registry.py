"""A name -> constructor table, so that a new likelihood, prior or guide is
one registered entry and the trainer and CLI pick it up without an edit.

Example
-------
>>> PRIORS = Registry("prior")
>>> @PRIORS.register("normal")
... class StandardNormalPrior: ...
>>> PRIORS.names()
('normal',)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from pyrovae.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Named constructors of one kind of component (``kind`` is used in errors)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers ``obj`` under ``name``."""

        def decorate(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            return obj

        return decorate

    def get(self, name: str) -> T:
        """The entry called ``name``; a :class:`ConfigError` listing the choices if none."""
        try:
            return self._entries[name]
        except KeyError:
            choices = ", ".join(self._entries)
            raise ConfigError(f"unknown {self.kind} {name!r}: choose one of {choices}") from None

    def names(self) -> tuple[str, ...]:
        """Registered names, in registration order."""
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries
