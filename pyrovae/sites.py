"""Names of the Pyro sample sites and plates, in one place.

Diagnostics, ``Predictive`` and the ArviZ conversion look sites up by these
names, so models and guides must use the constants, never string literals.
"""

from __future__ import annotations

#: The latent code z, one per data point.
LATENT = "z"
#: The observed image x.
OBS = "x"
#: The plate over data points; always at ``dim=-1``.
DATA_PLATE = "data"
#: Name under which the VAE's networks are registered with ``pyro.module``.
MODULE = "vae"
#: The class label y of a conditional or semi-supervised VAE (observed, or enumerated).
LABEL = "y"
