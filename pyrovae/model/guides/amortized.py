"""An encoder plus a guide head as a Pyro guide for any model with a latent site
in the data plate, reading the site's shape off the model the way Pyro's
autoguides do; :class:`pyrovae.model.vae.VAE` uses it as its guide.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import pyro
import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
from pyro import poutine
from torch import nn

from pyrovae.errors import ConfigError
from pyrovae.model.context import ModelContext
from pyrovae.model.guides.base import GUIDES, Guide
from pyrovae.sites import DATA_PLATE, LATENT


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
    model on its first call, then creates the guide head ``guide`` for it. Unlike
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
    guide
        The guide head: a registered name (``"iaf"``) or a
        :class:`~pyrovae.model.guides.base.Guide` class.
    options
        The head's options (checked by the head; defaults for the rest).
    site
        The latent site's name.
    event_shape
        The latent site's shape, when the caller knows it (no prototype trace).
    data_shape
        The shape of one data point, for a head that needs it (default: read
        off the first ``x``).

    Example
    -------
    >>> guide = AmortizedGuide(model, encoder, "iaf", {"flows": 2})  # doctest: +SKIP
    >>> guide(x)  # builds the head for model's z  # doctest: +SKIP
    >>> optimizer = torch.optim.Adam(guide.parameters())  # doctest: +SKIP
    """

    def __init__(
        self,
        model: Callable[..., Any],
        encoder: nn.Module,
        guide: str | type[Guide] = "normal",
        options: Mapping[str, Any] | None = None,
        *,
        site: str = LATENT,
        event_shape: Sequence[int] | None = None,
        data_shape: Sequence[int] | None = None,
        context: ModelContext | None = None,
    ) -> None:
        super().__init__()
        # In a tuple, as Pyro's autoguides keep it: a model that is an nn.Module
        # must not become a submodule, or its parameters would be the guide's too.
        self._model = (model,)
        n_features = getattr(encoder, "out_features", None)
        if not isinstance(n_features, numbers.Integral) or isinstance(n_features, bool):
            raise ConfigError(
                f"the encoder ({type(encoder).__name__}) needs an integer out_features "
                "attribute, the size of the features h(x) it returns: set "
                "encoder.out_features = N"
            )
        self.encoder = encoder
        self.head_class: type[Guide] = GUIDES.get(guide) if isinstance(guide, str) else guide
        self.head_options = self.head_class.resolve_options(options)
        self.site = site
        self._context = context
        self._data_shape = None if data_shape is None else tuple(data_shape)
        self.event_shape: torch.Size | None = None
        self.head: Guide | None = None
        if event_shape is not None:
            # The caller knows the shape (the VAE's config says it): no prototype
            # trace, and the head exists before the model first runs (the
            # VampPrior's density needs q(z|x) inside the model).
            self._build_head(torch.Size(event_shape), self._data_shape)

    @property
    def model(self) -> Callable[..., Any]:
        return self._model[0]

    def _build_head(self, event_shape: torch.Size, data_shape: tuple[int, ...] | None) -> Guide:
        self.event_shape = event_shape
        context = self._context or ModelContext(
            data_shape=data_shape or (), n_latent=math.prod(event_shape)
        )
        self.head_class.check(self.head_options, context)
        n_features = int(cast(int, self.encoder.out_features))
        self.head = self.head_class(context, n_features, **self.head_options)
        return self.head

    def _setup_prototype(self, x: torch.Tensor) -> None:
        event_shape = latent_event_shape(self.model, x, site=self.site)
        self._build_head(event_shape, tuple(x.shape[1:])).to(x.device)

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
        name (as :meth:`pyrovae.model.vae.VAE.guide` does).
        """
        with pyro.plate(DATA_PLATE, x.shape[0], dim=-1):
            return pyro.sample(self.site, self.qz(x))
