"""Inverse autoregressive flow (Kingma et al. 2016, "Improving Variational Inference
with Inverse Autoregressive Flow").

Each layer is an affine autoregressive map z -> mu(z, c) + sigma(z, c) * z whose
MADE (Germain et al. 2015) reads the previous z and a context c(x) from the
encoder. What c(x) is, is the option ``iaf_context``:

- ``features`` (the default, and every run before the option): the encoder's
  features h(x) themselves;
- a number C: a C-wide context vector c(x) = W h(x) + b that the guide emits
  alongside mu and sigma, as in Kingma et al. (Section 4: "the encoder
  network outputs mu, sigma and an extra output h");
- ``none``: no context, so the layers are one flow shared by every x and the
  guide is amortized only through mu and sigma.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyro.distributions.transforms as T
import torch
from torch import nn

from pyrovae.components import Option, positive_int
from pyrovae.model.context import ModelContext
from pyrovae.model.flows import check_made_widths, conditional_made, made
from pyrovae.model.guides.flow import FlowGuide

#: ``iaf_context`` values that are not a width.
FEATURES, NO_CONTEXT = "features", "none"
#: A context vector wider than this is a typo, not a model (and would fill
#: memory before failing).
MAX_CONTEXT = 65536


def context_size(value: Any) -> str | int:
    """``features``, ``none`` or the width of a context vector (``"8"`` -> ``8``)."""
    if value in (FEATURES, NO_CONTEXT):
        return str(value)
    try:
        width = positive_int(value)
    except ValueError:
        width = 0
    if not 1 <= width <= MAX_CONTEXT:
        raise ValueError(
            f"must be {FEATURES}, {NO_CONTEXT} or a whole number from 1 to {MAX_CONTEXT}, "
            f"got {value!r}"
        )
    return width


IAF_CONTEXT = Option(
    "iaf_context",
    FEATURES,
    "What conditions each IAF layer: features (the encoder's h(x)), none, "
    "or a number C (a C-wide context vector the guide emits beside mu, sigma).",
    context_size,
    "FEATURES|NONE|INTEGER",
)


class IAFGuide(FlowGuide):
    """Inverse autoregressive flow conditioned on h(x), coordinates reversed between layers."""

    name = "iaf"
    options = (*FlowGuide.options, IAF_CONTEXT)
    permute_between_layers = True

    def __init__(
        self,
        context: ModelContext,
        n_features: int,
        *,
        flows: int = 4,
        flow_hidden: tuple[int, ...] = (128,),
        iaf_context: str | int = FEATURES,
    ) -> None:
        if iaf_context == FEATURES:
            n_context = n_features
        elif iaf_context == NO_CONTEXT:
            n_context = 0
        else:
            n_context = int(iaf_context)
        super().__init__(
            context, n_features, flows=flows, flow_hidden=flow_hidden, n_context=n_context
        )
        self.iaf_context = iaf_context
        # Only the context-vector variant has a head of its own, so runs saved
        # before the option (features) load with the same parameters.
        self.context_head = (
            nn.Linear(n_features, n_context) if isinstance(iaf_context, int) else None
        )

    @classmethod
    def check(cls, options: Mapping[str, Any], context: ModelContext) -> None:
        check_made_widths(options, context, cls.title())

    @classmethod
    def layer(cls, n_latent: int, n_context: int, hidden: tuple[int, ...]) -> nn.Module:
        if n_context == 0:
            return T.AffineAutoregressive(made(n_latent, hidden))
        return T.ConditionalAffineAutoregressive(conditional_made(n_latent, n_context, hidden))

    def flow_context(self, h: torch.Tensor) -> torch.Tensor:
        if self.context_head is None:
            return h  # (batch, n_features); unused by unconditioned layers
        return self.context_head(h)  # (batch, iaf_context)
