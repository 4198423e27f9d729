"""Priors p(z): one class per file, found through the entry-point group ``pyrovae.priors``
(see :mod:`pyrovae.components`)."""

from pyrovae.model.priors.base import PRIORS, Prior

__all__ = ["PRIORS", "Prior"]
