"""The priors of the model; importing the package registers the built-in ones."""

from pyrovae.model.priors import flow, mixture, normal, vamp  # noqa: F401  (registers them)
from pyrovae.model.priors.base import PRIORS, Prior

__all__ = ["PRIORS", "Prior"]
