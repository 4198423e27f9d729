"""Radial flow (Rezende & Mohamed 2015), each layer's parameters computed from h(x)."""

from __future__ import annotations

import pyro.distributions.transforms as T
from torch import nn

from pyrovae.model.guides.flow import FlowGuide


class RadialGuide(FlowGuide):
    """Radial flow conditioned on h(x); no closed-form inverse, so it scores only its draws."""

    name = "radial"
    scores_any_z = False

    @classmethod
    def layer(cls, n_latent: int, n_context: int, hidden: tuple[int, ...]) -> nn.Module:
        return T.conditional_radial(n_latent, n_context, list(hidden))
