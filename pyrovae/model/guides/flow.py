"""Flow guides: the mean-field Gaussian followed by normalizing-flow layers whose
parameters are computed from h(x), so the flow is amortized (Rezende & Mohamed
2015, "Variational Inference with Normalizing Flows").

A flow guide is a subclass of :class:`FlowGuide` that says how to build one
conditional layer (:meth:`FlowGuide.layer`, a Pyro conditional transform) and
whether the coordinates are reversed between layers
(:attr:`FlowGuide.permute_between_layers`: autoregressive and coupling layers
need it so that every coordinate can depend on every other). The density
includes every layer's log-determinant.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pyro.distributions as dist
import torch
from pyro.distributions.conditional import ConditionalTransformModule
from torch import nn

from pyrovae.components import Option
from pyrovae.model.context import ModelContext
from pyrovae.model.distributions import FlowDistribution, Reverse
from pyrovae.model.flows import FLOW_HIDDEN, FLOWS
from pyrovae.model.guides.normal import DiagonalNormalGuide


class FlowGuide(DiagonalNormalGuide):
    """Base of flow guides: Normal(mu(h), sigma(h)) pushed through conditional layers.

    Each layer's parameters are computed from the context h(x) (the encoder's
    features) by a small network sized by ``flow_hidden``. The result is a
    :class:`~pyro.distributions.TransformedDistribution` whose ``log_prob``
    adds the log-determinants of every layer.
    """

    options: ClassVar[tuple[Option, ...]] = (FLOWS, FLOW_HIDDEN)
    has_closed_form_mean = False
    #: The gaps' q* of a flow guide is flexible too (an IAF), not the diagonal Gaussian
    #: of the class this one builds its base distribution with.
    local_family = "iaf"
    #: Reverse the coordinates between layers (autoregressive and coupling layers).
    permute_between_layers: ClassVar[bool] = False
    reverse: torch.Tensor

    def __init__(
        self,
        context: ModelContext,
        n_features: int,
        *,
        flows: int = 4,
        flow_hidden: tuple[int, ...] = (128,),
        n_context: int | None = None,
    ) -> None:
        super().__init__(context, n_features)
        #: The width of what conditions the layers: h(x) itself unless a subclass
        #: says otherwise (0: unconditioned layers, the same flow for every x).
        self.n_context = n_features if n_context is None else n_context
        self.layers = nn.ModuleList(
            self.layer(self.n_latent, self.n_context, flow_hidden) for _ in range(flows)
        )
        self.register_buffer("reverse", torch.arange(self.n_latent - 1, -1, -1))

    @classmethod
    def layer(cls, n_latent: int, n_context: int, hidden: tuple[int, ...]) -> nn.Module:
        """One conditional transform of ``n_latent`` coordinates given a context vector
        (with ``n_context`` 0, a subclass that allows it returns a plain transform)."""
        raise NotImplementedError

    def flow_context(self, h: torch.Tensor) -> torch.Tensor:
        """What conditions every layer: the encoder's features h(x) themselves."""
        return h

    def forward(self, h: torch.Tensor) -> dist.TorchDistribution:
        base = self.gaussian(h)  # batch (batch,), event (n_latent,)
        context = self.flow_context(h)  # (batch, n_context)
        transforms: list[Any] = []
        for i, layer in enumerate(self.layers):
            if self.permute_between_layers and i > 0:
                transforms.append(Reverse(self.reverse))
            if isinstance(layer, ConditionalTransformModule):
                transforms.append(layer.condition(context))
            else:  # an unconditioned layer: the same transform for every x
                transforms.append(layer)
        return FlowDistribution(base, transforms)
