"""Amortized guides q(z|x): one guide head per file, found through the entry-point
group ``pyrovae.guides`` (see :mod:`pyrovae.components`), and
:class:`~pyrovae.model.guides.amortized.AmortizedGuide`, which turns an encoder and a
head into a Pyro guide."""

from pyrovae.model.guides.base import GUIDES, Guide

__all__ = ["GUIDES", "Guide"]
