"""The VampPrior (Tomczak & Welling 2018, "VAE with a VampPrior"): the mixture
(1/K) sum_k q(z | u_k) over learned pseudo-inputs u_k, evaluated with the
VAE's own encoder and guide.

Three parameterizations of the pseudo-inputs (the option ``pseudo_inputs``):
``sigmoid`` (the default, and every run before the option) keeps one free
tensor per pseudo-input and squashes it, u_k = sigmoid(r_k); ``hardtanh`` is
Tomczak & Welling's own and pythae's: a linear layer applied to the one-hot
vector e_k and clipped to [0, 1], u_k = hardtanh(W e_k + b); ``linear`` is that
layer unclipped, u_k = W e_k + b, for data of any range (a Gaussian likelihood
on standardized data), where the other two cannot reach the data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from pyrovae.components import Option, choice
from pyrovae.errors import ConfigError
from pyrovae.model.context import ModelContext
from pyrovae.model.priors.base import Posterior, Prior
from pyrovae.model.priors.mixture import COMPONENTS

PSEUDO_INPUTS = Option(
    "pseudo_inputs",
    "sigmoid",
    "VampPrior pseudo-inputs: sigmoid (of free parameters), hardtanh "
    "(of a linear layer applied to one-hot inputs, as pythae), both in [0, 1], or "
    "linear (that layer unclipped, for data of any range).",
    choice("sigmoid", "hardtanh", "linear"),
)


class VampPrior(Prior):
    """The VampPrior: a mixture of q(z|u_k) over learned pseudo-inputs u_k.

    The pseudo-inputs are data points: in [0, 1], a sigmoid of free parameters
    or a hardtanh of a linear layer on one-hot inputs, or of any value, that
    layer alone (``pseudo_inputs``; :attr:`input_range`). q
    is the VAE's own encoder and guide, handed over with
    :meth:`attach_posterior` after the VAE is built: the prior keeps a plain
    reference to it rather than the VAE as a submodule, which would make the
    module tree circular. Its components are q(z|u_k), so it can be tempered
    exactly when the guide can (the guide's ``temperable``), and it needs a
    guide that scores codes it did not draw (``scores_any_z``).
    """

    name = "vamp"
    options = (COMPONENTS, PSEUDO_INPUTS)
    needs_posterior = True

    @classmethod
    def check(cls, options: Mapping[str, Any], context: ModelContext) -> None:
        guide = context.classes.get("guide")
        if guide is not None and not getattr(guide, "scores_any_z", False):
            # The VampPrior evaluates q(z|u_k) at codes q did not draw.
            raise ConfigError(
                f"{cls.title()} needs a guide that scores any z (a closed-form inverse), "
                f"which {guide.title()} does not declare (scores_any_z)"
            )

    def __init__(
        self,
        context: ModelContext,
        *,
        prior_components: int = 50,
        pseudo_inputs: str = "sigmoid",
    ) -> None:
        super().__init__(context)
        k = prior_components
        self.data_shape = tuple(context.shape)
        self.parameterization = pseudo_inputs
        # Each parameterization owns only its own parameters, so runs saved
        # before the option (sigmoid, ``raw_inputs``) load unchanged.
        if pseudo_inputs == "sigmoid":
            self.raw_inputs = nn.Parameter(torch.randn(k, *self.data_shape))  # (K, *data_shape)
        else:
            self.input_layer = nn.Linear(k, math.prod(self.data_shape))
            self.register_buffer("one_hot", torch.eye(k), persistent=False)  # (K, K)
        self._qz: Posterior | None = None
        self._guide = context.classes["guide"]
        self.temperable = bool(getattr(self._guide, "temperable", False))  # type: ignore[misc]

    def attach_posterior(self, qz: Posterior) -> None:
        self._qz = qz

    @property
    def input_range(self) -> tuple[float, float] | None:
        """The interval the pseudo-inputs lie in (``None``: any value); the data must
        lie in it too, or no pseudo-input can resemble them."""
        return None if self.parameterization == "linear" else (0.0, 1.0)

    def pseudo_inputs(self) -> torch.Tensor:
        """u_k, ``(K, *data_shape)``, in :attr:`input_range`."""
        if self.parameterization == "sigmoid":
            return torch.sigmoid(self.raw_inputs)
        u = self.input_layer(self.one_hot)  # (K, prod(data_shape))
        if self.parameterization == "hardtanh":
            u = F.hardtanh(u, 0.0, 1.0)
        return u.reshape(-1, *self.data_shape)

    def _mixture(self, temperature: float = 1.0) -> dist.TorchDistribution:
        if self._qz is None:
            raise RuntimeError("VampPrior used before attach_posterior(qz)")
        u = self.pseudo_inputs()  # (K, *data_shape)
        components = self._qz(u)  # batch (K,), event (n_latent,)
        if temperature != 1.0:
            components = self._guide.temper(components, temperature)
        k = components.batch_shape[0]
        weights = dist.Categorical(logits=torch.zeros(k, device=u.device))
        return _BroadcastMixture(weights, components)

    def forward(self) -> dist.TorchDistribution:
        return self._mixture()

    def sample(self, n: int, temperature: float = 1.0) -> torch.Tensor:
        self.check_temperable(temperature)
        return self._mixture(temperature).sample((n,))


class _BroadcastMixture(dist.MixtureSameFamily):
    """A mixture that hands its components codes already expanded to ``(..., K, n)``.

    Flow components with context-dependent layers (an IAF conditioned on
    h(u_k)) invert only inputs whose batch shape matches their context's, not
    the ``(..., 1, n)`` that :class:`~torch.distributions.MixtureSameFamily`
    passes on.
    """

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        z = self._pad(value)  # (..., 1, n_latent)
        k = self.component_distribution.batch_shape[-1]
        z = z.expand(*z.shape[:-2], k, z.shape[-1])  # (..., K, n_latent)
        log_prob_z = self.component_distribution.log_prob(z)  # (..., K)
        log_weights = torch.log_softmax(self.mixture_distribution.logits, dim=-1)
        return torch.logsumexp(log_prob_z + log_weights, dim=-1)  # (...)
