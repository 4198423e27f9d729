"""Flow guides: the mean-field Gaussian followed by normalizing-flow layers whose
parameters are computed from h(x), so the flow is amortized.

Inverse autoregressive flow (Kingma et al. 2016, "Improving Variational
Inference with Inverse Autoregressive Flow"), planar and radial flows
(Rezende & Mohamed 2015, "Variational Inference with Normalizing Flows"),
element-wise linear rational splines (Dolatabadi et al. 2020; after Durkan
et al. 2019, "Neural Spline Flows"). The layers are Pyro's conditional
transforms; the density includes their log-determinants. The spline acts on
each coordinate separately, so it reshapes marginals but cannot add
correlation; IAF, planar and radial can.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import pyro
import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
from pyro.distributions.conditional import ConditionalTransformModule
from torch import nn

from pyrovae.config import ModelConfig
from pyrovae.model.guides.base import GUIDES
from pyrovae.model.guides.normal import DiagonalNormalGuide


def _iaf_layer(n_latent: int, n_context: int, hidden: list[int]) -> nn.Module:
    # Identity order inside the MADE: the reversals between layers (added by
    # FlowGuide) are what lets every coordinate depend on every other one.
    arn = pyro.nn.ConditionalAutoRegressiveNN(
        n_latent, n_context, hidden, permutation=cast(torch.LongTensor, torch.arange(n_latent))
    )
    return T.ConditionalAffineAutoregressive(arn)


#: Conditional transform builders: (n_latent, n_context, hidden sizes) -> layer.
FLOW_LAYERS: dict[str, Callable[[int, int, list[int]], nn.Module]] = {
    "iaf": _iaf_layer,
    "planar": T.conditional_planar,
    "radial": T.conditional_radial,
    "spline": T.conditional_spline,
}


class FlowGuide(DiagonalNormalGuide):
    """Normal(mu(h), sigma(h)) pushed through ``config.flows`` conditional flow layers.

    Each layer is a Pyro conditional transform (``FLOW_LAYERS[kind]``) whose
    parameters a small network (``config.flow_hidden``) computes from the
    context h(x); the encoder's features are that context. Autoregressive
    layers alternate the order of the coordinates (a reversal between
    layers), as in Kingma et al. (2016). The result is a
    :class:`~pyro.distributions.TransformedDistribution` whose ``log_prob``
    adds the log-determinants of every layer.

    The registered flow guides differ only in ``kind``.
    """

    kind: str = "iaf"
    reverse: torch.Tensor

    def __init__(self, n_hidden: int, n_latent: int, config: ModelConfig) -> None:
        super().__init__(n_hidden, n_latent, config)
        build = FLOW_LAYERS[self.kind]
        self.layers = nn.ModuleList(
            build(n_latent, n_hidden, list(config.flow_hidden)) for _ in range(config.flows)
        )
        self.register_buffer("reverse", torch.arange(n_latent - 1, -1, -1))

    def forward(self, h: torch.Tensor) -> dist.TorchDistribution:
        base = super().forward(h)  # batch (batch,), event (n_latent,)
        transforms: list[Any] = []
        for i, layer in enumerate(self.layers):
            if self.kind == "iaf" and i > 0:
                transforms.append(T.Permute(self.reverse))
            transforms.append(cast(ConditionalTransformModule, layer).condition(h))
        return dist.TransformedDistribution(base, transforms)


@GUIDES.register("iaf")
class IAFGuide(FlowGuide):
    """Inverse autoregressive flow (Kingma et al. 2016)."""

    kind = "iaf"


@GUIDES.register("planar")
class PlanarGuide(FlowGuide):
    """Planar flow (Rezende & Mohamed 2015); scores only its own draws."""

    kind = "planar"
    scores_any_z = False


@GUIDES.register("radial")
class RadialGuide(FlowGuide):
    """Radial flow (Rezende & Mohamed 2015); scores only its own draws."""

    kind = "radial"
    scores_any_z = False


@GUIDES.register("spline")
class SplineGuide(FlowGuide):
    """Element-wise linear rational splines (Dolatabadi et al. 2020), one per coordinate."""

    kind = "spline"
