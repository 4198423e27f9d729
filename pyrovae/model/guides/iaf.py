"""Inverse autoregressive flow (Kingma et al. 2016, "Improving Variational Inference
with Inverse Autoregressive Flow"), each layer's MADE conditioned on h(x)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyro.distributions.transforms as T
from torch import nn

from pyrovae.model.context import ModelContext
from pyrovae.model.flows import check_made_widths, conditional_made
from pyrovae.model.guides.flow import FlowGuide


class IAFGuide(FlowGuide):
    """Inverse autoregressive flow conditioned on h(x), coordinates reversed between layers."""

    name = "iaf"
    permute_between_layers = True

    @classmethod
    def check(cls, options: Mapping[str, Any], context: ModelContext) -> None:
        check_made_widths(options, context, cls.title())

    @classmethod
    def layer(cls, n_latent: int, n_context: int, hidden: tuple[int, ...]) -> nn.Module:
        return T.ConditionalAffineAutoregressive(conditional_made(n_latent, n_context, hidden))
