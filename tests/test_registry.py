from __future__ import annotations

import pytest

from pyrovae.errors import ConfigError
from pyrovae.model.guides.base import GUIDES
from pyrovae.model.likelihoods.base import LIKELIHOODS
from pyrovae.model.priors.base import PRIORS
from pyrovae.registry import Registry


def test_register_and_get():
    registry: Registry[type] = Registry("widget")

    @registry.register("a")
    class A:
        pass

    assert registry.get("a") is A
    assert registry.names() == ("a",)
    assert "a" in registry and "b" not in registry
    with pytest.raises(ConfigError, match="unknown widget 'b': choose one of a"):
        registry.get("b")
    with pytest.raises(ValueError, match="twice"):
        registry.register("a")(A)


def test_builtin_entries():
    assert {"bernoulli", "continuous-bernoulli", "gaussian"} <= set(LIKELIHOODS.names())
    assert "normal" in GUIDES.names()
    assert "normal" in PRIORS.names()
