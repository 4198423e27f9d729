"""Encoder and decoder networks: one network component per file, found through the
entry-point group ``pyrovae.networks`` (see :mod:`pyrovae.components`); the shape
contract is in :mod:`pyrovae.model.networks.base`."""

from pyrovae.model.networks.base import NETWORKS, Network, Networks

__all__ = ["NETWORKS", "Network", "Networks"]
