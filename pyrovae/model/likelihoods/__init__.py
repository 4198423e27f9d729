"""Observation models p(x|z): one class per file, found through the entry-point group
``pyrovae.likelihoods`` (see :mod:`pyrovae.components`)."""

from pyrovae.model.likelihoods.base import LIKELIHOODS, Likelihood

__all__ = ["LIKELIHOODS", "Likelihood"]
