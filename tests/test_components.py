"""Tests of :mod:`pyrovae.components`: components declare themselves, the registries find
them, and everything generated from the declarations (CLI options, docs) follows.

Every test iterates over whatever is registered, never over a list of names.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from pyrovae.cli import main
from pyrovae.components import Option, positive_int
from pyrovae.errors import ComponentMissingError, ConfigError
from pyrovae.model.catalog import catalog_markdown
from pyrovae.model.priors import PRIORS, Prior
from pyrovae.model.spec import KINDS, REGISTRIES, model_config, resolve

DOCS = Path(__file__).resolve().parent.parent / "docs" / "components.md"

EVERY_COMPONENT = [(kind, name) for kind in KINDS for name in REGISTRIES[kind].names()]


@pytest.mark.parametrize("kind, name", EVERY_COMPONENT)
def test_every_component_declares_itself(kind: str, name: str) -> None:
    cls = REGISTRIES[kind].get(name)
    assert cls.kind == kind and cls.name == name
    assert cls.summary() and not cls.summary().endswith(" ")
    defaults = cls.resolve_options({})
    assert set(defaults) == {option.name for option in cls.options}
    for option in cls.options:
        assert option.help.endswith("."), (name, option.name)
        assert option.to_json(defaults[option.name]) is None or option.default is not None


@pytest.mark.parametrize("kind, name", EVERY_COMPONENT)
def test_every_option_is_a_train_flag(kind: str, name: str) -> None:
    help_text = CliRunner().invoke(main, ["train", "--help"]).output
    assert f"--{kind}" in help_text
    for option in REGISTRIES[kind].get(name).options:
        assert option.flag in help_text, option.flag


def test_docs_are_generated_from_the_declarations() -> None:
    assert DOCS.read_text() == catalog_markdown("pyrovae"), (
        "docs/components.md is stale: pyrovae components --markdown --builtin > docs/components.md"
    )


class _Laplacian(Prior):
    """A prior registered at run time, with an option of its own."""

    name = "test-laplacian"
    options = (Option("spread", 2, "Laplace scale.", positive_int),)

    def __init__(self, context, *, spread: int = 2) -> None:
        super().__init__(context)
        self.spread = spread

    def forward(self):
        import pyro.distributions as dist
        import torch

        return dist.Laplace(torch.zeros(self.n_latent), float(self.spread)).to_event(1)


@pytest.fixture
def laplacian():
    PRIORS.register(_Laplacian)
    yield
    PRIORS.unregister(_Laplacian.name)


def test_a_registered_component_is_listed_offered_and_checked(laplacian: None) -> None:
    listing = CliRunner().invoke(main, ["components"]).output
    assert "test-laplacian" in listing and "--spread" in listing
    assert "--spread" in CliRunner().invoke(main, ["train", "--help"]).output
    config = model_config(prior="test-laplacian", spread=3, data_shape=(1, 4, 4))
    assert resolve(config).options["prior"] == {"spread": 3}
    with pytest.raises(ConfigError, match="--spread of prior 'test-laplacian'"):
        resolve(model_config(prior="test-laplacian", spread=0))
    with pytest.raises(ConfigError, match="it is an option of prior 'test-laplacian'"):
        model_config(prior="normal", spread=3)


def test_the_listing_keeps_a_long_name_apart_from_its_summary() -> None:
    listing = CliRunner().invoke(main, ["components"]).output
    assert "  autoregressive-bernoulli Binary pixels" in listing
    assert "  bernoulli             Binary pixels" in listing  # short names stay aligned


def test_registering_twice_or_without_a_name_is_refused(laplacian: None) -> None:
    class Other(_Laplacian):
        pass

    with pytest.raises(ValueError, match="registered already .*unregister it first"):
        PRIORS.register(Other)

    class Spaced(_Laplacian):
        name = "my prior"

    with pytest.raises(ValueError, match="name 'my prior' must be letters, digits"):
        PRIORS.register(Spaced)

    class BadOption(_Laplacian):
        name = "test-bad-option"
        options = (Option("not an identifier", 1.0, "h", float),)

    with pytest.raises(ValueError, match="whose name is a Python identifier"):
        PRIORS.register(BadOption)

    class Nameless(Prior):
        pass

    with pytest.raises(ValueError, match="with a name"):
        PRIORS.register(Nameless)


def test_a_missing_component_names_its_provider() -> None:
    with pytest.raises(ComponentMissingError, match="unknown prior 'nope': choose one of"):
        PRIORS.get("nope")
    with pytest.raises(ComponentMissingError, match="comes from some-plugin, which is not"):
        PRIORS.get("nope", "some-plugin")


def test_a_summary_is_the_docstrings_first_paragraph_on_one_line():
    from pyrovae.components import Component

    class Wrapped(Component):
        """A first sentence that a line break
        wraps.

        Details that are not the summary."""

    assert Wrapped.summary() == "A first sentence that a line break wraps."

    class Spaced(Component):
        pass

    Spaced.__doc__ = "One line.\n    \n    A blank line of spaces ends the paragraph too."
    assert Spaced.summary() == "One line."

    class Literal(Component):
        """The ``mlp`` network's layers, ``x`` and ``y``."""

    assert Literal.summary() == "The `mlp` network's layers, `x` and `y`."


def test_whole_number_options_take_numpy_integers_and_floats_without_a_fraction() -> None:
    import numpy as np

    assert positive_int(np.int64(3)) == 3 and type(positive_int(np.int64(3))) is int
    assert positive_int(3.0) == 3 and positive_int("7") == 7
    for bad in (3.5, float("nan"), float("inf"), True, "3.0", 0):
        with pytest.raises(ValueError, match="whole number"):
            positive_int(bad)
