"""Amortized guides q(z|x), registered by name.

A guide head is an ``nn.Module`` that maps the encoder's features h(x)
``(batch, n_hidden)`` to a distribution over z with batch shape ``(batch,)``
and event shape ``(n_latent,)``. The VAE samples it at the latent site.

- ``normal``: the mean-field Gaussian of Kingma & Welling (2014),
  z = mu(x) + sigma(x) * eps.
- ``iaf``, ``planar``, ``radial``, ``spline``: that Gaussian followed by
  ``config.flows`` normalizing-flow layers whose parameters are computed from
  h(x), so the flow is amortized: inverse autoregressive flow (Kingma et al.
  2016, "Improving Variational Inference with Inverse Autoregressive Flow"),
  planar and radial flows (Rezende & Mohamed 2015, "Variational Inference with
  Normalizing Flows"), element-wise linear rational splines (Dolatabadi et al.
  2020, "Invertible Generative Modeling using Linear Rational Splines"; after
  Durkan et al. 2019, "Neural Spline Flows"). The layers are Pyro's
  conditional transforms; the density includes their log-determinants. The
  spline acts on each coordinate separately, so it reshapes marginals
  (skew, heavy tails) but cannot add correlation; IAF, planar and radial can.

:class:`AmortizedGuide` wraps an encoder and a head into a Pyro guide for
any model with a latent site in the data plate, reading the site's shape off
the model the way Pyro's autoguides do; :class:`pyrovae.model.VAE` uses it
as its guide.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, cast

import pyro
import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.distributions.conditional import ConditionalTransformModule
from torch import nn

from pyrovae.config import ModelConfig
from pyrovae.errors import ConfigError
from pyrovae.registry import Registry
from pyrovae.sites import DATA_PLATE, LATENT

GUIDES: Registry[type[Guide]] = Registry("guide")


class Guide(nn.Module):
    """Base class: ``forward(h) -> q(z|x)``."""

    #: False when log q(z|x) can only be evaluated at z the guide itself just
    #: drew (planar and radial flows have no closed-form inverse).
    scores_any_z: bool = True
    #: Whether :meth:`temper` can scale the spread of q(z|x): the VampPrior,
    #: whose components are q(z|u_k), can be sampled at a temperature only then.
    temperable: bool = False

    def __init__(self, n_hidden: int, n_latent: int, config: ModelConfig) -> None:
        super().__init__()
        self.n_hidden = n_hidden
        self.n_latent = n_latent

    def forward(self, h: torch.Tensor) -> dist.TorchDistribution:
        raise NotImplementedError

    @classmethod
    def temper(cls, qz: dist.TorchDistribution, temperature: float) -> dist.TorchDistribution:
        """``qz`` (from :meth:`forward`) with its spread scaled by ``temperature``.

        Only guides that set :attr:`temperable` implement it; the others refuse
        with a :class:`~pyrovae.errors.ConfigError`.
        """
        raise ConfigError(
            f"guide {cls.__name__} cannot be tempered: its q(z|x) has no spread "
            "to scale; sample at temperature 1"
        )


@GUIDES.register("normal")
class DiagonalNormalGuide(Guide):
    """Normal(mu(h), sigma(h)) with independent coordinates."""

    #: Floor on sigma: softplus keeps it positive without exp's overflow, the
    #: floor keeps log q finite when the encoder pushes a unit to certainty.
    min_scale = 1e-4
    #: The Gaussian's scale is multiplied by the temperature (for the flow
    #: guides below: the scale of their Gaussian base, before the layers).
    temperable = True

    def __init__(self, n_hidden: int, n_latent: int, config: ModelConfig) -> None:
        super().__init__(n_hidden, n_latent, config)
        self.loc = nn.Linear(n_hidden, n_latent)
        self.raw_scale = nn.Linear(n_hidden, n_latent)

    def forward(self, h: torch.Tensor) -> dist.TorchDistribution:
        z_loc = self.loc(h)  # (batch, n_latent)
        z_scale = F.softplus(self.raw_scale(h)) + self.min_scale  # (batch, n_latent)
        return dist.Normal(z_loc, z_scale).to_event(1)

    @classmethod
    def temper(cls, qz: dist.TorchDistribution, temperature: float) -> dist.TorchDistribution:
        return tempered_gaussian(qz, temperature)


def tempered_gaussian(qz: dist.TorchDistribution, temperature: float) -> dist.TorchDistribution:
    """``qz`` with the scale of its Gaussian part multiplied by ``temperature``.

    ``qz`` is a Normal, possibly made :class:`~pyro.distributions.Independent`
    and pushed through transforms (a flow); the transforms are kept.
    """
    if isinstance(qz, dist.TransformedDistribution):
        base = tempered_gaussian(qz.base_dist, temperature)
        return dist.TransformedDistribution(base, qz.transforms)
    if isinstance(qz, dist.Independent):
        base = tempered_gaussian(qz.base_dist, temperature)
        return base.to_event(qz.reinterpreted_batch_ndims)
    if isinstance(qz, dist.Normal):
        return dist.Normal(qz.loc, temperature * qz.scale)
    raise TypeError(f"tempered_gaussian: {type(qz).__name__} has no Gaussian part")


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


def latent_event_shape(model: Callable[..., Any], *args: Any, site: str = LATENT) -> torch.Size:
    """The event shape of ``model``'s sample site ``site``, from one trace of ``model(*args)``.

    The trace runs in a throw-away parameter store and without gradients, so
    it leaves no trace behind (as Pyro's autoguides' prototype trace).
    """
    with pyro.get_param_store().scope(), torch.no_grad(), poutine.block():
        trace = poutine.trace(model).get_trace(*args)
    if site not in trace.nodes or trace.nodes[site]["type"] != "sample":
        raise ValueError(f"the model has no sample site {site!r}")
    fn: Any = trace.nodes[site]["fn"]
    return cast(torch.Size, fn.event_shape)


class AmortizedGuide(nn.Module):
    """An encoder plus a registered guide head, as a Pyro guide for any model.

    In the spirit of Pyro's autoguides (``AutoNormal(model)``), it is built from
    the model and reads the shape of the latent site off a prototype trace of the
    model on its first call, then creates the head ``config.guide`` for it. Unlike
    the autoguides, q(z|x) is amortized: its parameters come from ``encoder(x)``.
    The model must sample ``site`` inside a plate ``DATA_PLATE`` at ``dim=-1``
    over the first dimension of ``x``. As with the autoguides, call the guide
    once before collecting its parameters for an optimizer.

    Parameters
    ----------
    model
        The Pyro model, called as ``model(x)``.
    encoder
        A network ``x -> h(x)`` with an ``out_features`` attribute.
    config
        Names the head (``config.guide``) and its flow options.
    site
        The latent site's name.

    Example
    -------
    >>> guide = AmortizedGuide(model, encoder, ModelConfig(guide="iaf", flows=2))  # doctest: +SKIP
    >>> guide(x)  # builds the head for model's z  # doctest: +SKIP
    >>> optimizer = torch.optim.Adam(guide.parameters())  # doctest: +SKIP
    """

    def __init__(
        self,
        model: Callable[..., Any],
        encoder: nn.Module,
        config: ModelConfig,
        site: str = LATENT,
        event_shape: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        # In a tuple, as Pyro's autoguides keep it: a model that is an nn.Module
        # must not become a submodule, or its parameters would be the guide's too.
        self._model = (model,)
        self.encoder = encoder
        self.config = config
        self.site = site
        self.event_shape: torch.Size | None = None
        self.head: Guide | None = None
        if event_shape is not None:
            # The caller knows the shape (the VAE's config says it): no prototype
            # trace, and the head exists before the model first runs (the
            # VampPrior's density needs q(z|x) inside the model).
            self._build_head(torch.Size(event_shape))

    @property
    def model(self) -> Callable[..., Any]:
        return self._model[0]

    def _build_head(self, event_shape: torch.Size) -> Guide:
        self.event_shape = event_shape
        n_hidden = cast(int, self.encoder.out_features)
        self.head = GUIDES.get(self.config.guide)(n_hidden, math.prod(event_shape), self.config)
        return self.head

    def _setup_prototype(self, x: torch.Tensor) -> None:
        self._build_head(latent_event_shape(self.model, x, site=self.site)).to(x.device)

    def qz(self, x: torch.Tensor) -> dist.TorchDistribution:
        """q(z|x) with batch ``(batch,)`` and the model's event shape."""
        if self.head is None:
            self._setup_prototype(x)
        assert self.head is not None and self.event_shape is not None
        qz = self.head(self.encoder(x))
        if len(self.event_shape) != 1:
            flat = torch.Size([qz.event_shape[0]])
            qz = dist.TransformedDistribution(qz, [T.ReshapeTransform(flat, self.event_shape)])
        return qz

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.head is None:
            self._setup_prototype(x)  # outside the plate: the model opens its own
        pyro.module("amortized_guide", self)
        return self.sample_latent(x)

    def sample_latent(self, x: torch.Tensor) -> torch.Tensor:
        """Sample the latent site from q(z|x) in the data plate, registering no parameters.

        For a caller that registers the networks with Pyro itself, under its own
        name (as :meth:`pyrovae.model.VAE.guide` does).
        """
        with pyro.plate(DATA_PLATE, x.shape[0], dim=-1):
            return pyro.sample(self.site, self.qz(x))
