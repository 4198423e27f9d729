"""The guides of the model; importing the package registers the built-in ones."""

from pyrovae.model.guides import amortized, flows, normal  # noqa: F401  (registers them)
from pyrovae.model.guides.base import GUIDES, Guide

__all__ = ["GUIDES", "Guide"]
