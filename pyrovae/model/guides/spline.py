"""Element-wise linear rational splines (Dolatabadi et al. 2020, "Invertible Generative
Modeling using Linear Rational Splines"; after Durkan et al. 2019, "Neural Spline
Flows"), each coordinate's spline computed from h(x). They reshape marginals (skew,
heavy tails) but cannot add correlation."""

from __future__ import annotations

import pyro.distributions.transforms as T
from torch import nn

from pyrovae.model.guides.flow import FlowGuide


class SplineGuide(FlowGuide):
    """Element-wise linear rational splines conditioned on h(x), one per coordinate."""

    name = "spline"

    @classmethod
    def layer(cls, n_latent: int, n_context: int, hidden: tuple[int, ...]) -> nn.Module:
        return T.conditional_spline(n_latent, n_context, list(hidden))
