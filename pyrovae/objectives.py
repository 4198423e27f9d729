"""Training objectives and the per-data-point terms of the ELBO.

ELBO(x) = E_q[log p(x|z)] - KL(q(z|x) || p(z)) <= log p(x)
(Kingma & Welling 2014). The training objective is a Pyro ELBO estimator,
:class:`~pyro.infer.TraceMeanField_ELBO` by default (analytic KL where
torch registers one, sampled otherwise) or :class:`~pyro.infer.Trace_ELBO`,
or the importance-weighted bound of Burda et al. (2016), "Importance Weighted
Autoencoders" (:class:`ImportanceWeightedELBO`):

IWAE_K(x) = E[log (1/K) sum_k p(x, z_k) / q(z_k|x)],  z_k ~ q(z|x),

which equals the ELBO at K = 1 and rises to log p(x) as K grows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from pyro import poutine
from pyro.infer import ELBO, Trace_ELBO, TraceMeanField_ELBO
from pyro.infer.enum import get_importance_trace
from torch.distributions import kl_divergence

from pyrovae.config import TrainConfig
from pyrovae.errors import ConfigError
from pyrovae.sites import LATENT, OBS

_ELBOS: dict[str, type[ELBO]] = {"meanfield": TraceMeanField_ELBO, "trace": Trace_ELBO}


def make_objective(config: TrainConfig) -> ELBO:
    """The training objective of ``config``: a Pyro ELBO object whose
    ``differentiable_loss(model, guide, x)`` is minimized (summed over the batch)."""
    if config.objective == "iwae":
        return ImportanceWeightedELBO(num_particles=config.particles)
    if config.objective != "elbo":
        raise ConfigError(f"--objective must be elbo or iwae, got {config.objective!r}")
    return make_elbo(config.elbo, config.particles)


def make_elbo(name: str, particles: int = 1) -> ELBO:
    """The Pyro ELBO estimator ``name`` with ``particles`` vectorized samples of z."""
    try:
        cls = _ELBOS[name]
    except KeyError:
        raise ConfigError(f"--elbo must be one of {', '.join(_ELBOS)}, got {name!r}") from None
    return cls(num_particles=particles, vectorize_particles=particles > 1, max_plate_nesting=1)


class ImportanceWeightedELBO(ELBO):
    """The IWAE bound, per data point, as a Pyro ELBO (Burda et al. 2016).

    The ``num_particles`` samples of every site are drawn at once, in a
    vectorized particle plate; the log-weights log p(x, z_k) - log q(z_k|x)
    of each data point are then averaged inside the log over that point's
    own particles. Pyro's ``RenyiELBO(alpha=0)`` computes the same value
    when every site lies in the data plate (a test checks it against this
    class), but it has no ``differentiable_loss``, which the trainer calls,
    and with any site outside the plate it silently becomes a bound on the
    whole batch's joint density; this class refuses such models instead.

    Every sample site must lie in the data plate (local latents only), at
    ``dim=-1``. Site scales apply (the β-weighting scales log p(z) - log q(z|x)
    inside each weight). Gradients are the plain reparameterized ones.

    Example
    -------
    >>> objective = ImportanceWeightedELBO(num_particles=5)
    >>> loss = objective.differentiable_loss(vae.model, vae.guide, x)  # doctest: +SKIP
    """

    def __init__(self, num_particles: int = 1, max_plate_nesting: int = 1) -> None:
        super().__init__(
            num_particles=num_particles,
            max_plate_nesting=max_plate_nesting,
            vectorize_particles=True,
        )

    def _get_trace(self, model, guide, args, kwargs):
        return get_importance_trace("flat", self.max_plate_nesting, model, guide, args, kwargs)

    def log_weights(self, model, guide, *args: Any, **kwargs: Any) -> torch.Tensor:
        """log p(x, z_k) - log q(z_k|x), ``(num_particles, batch)``."""
        model_trace, guide_trace = self._get_vectorized_trace(model, guide, args, kwargs)
        log_w: torch.Tensor | float = 0.0
        for trace, sign in ((model_trace, 1.0), (guide_trace, -1.0)):
            for name, site in trace.nodes.items():
                if site["type"] != "sample":
                    continue
                if not any(frame.dim == -1 for frame in site["cond_indep_stack"]):
                    raise ValueError(
                        f"site {name!r} is outside the data plate; the importance-weighted "
                        "bound needs every site in one data plate at dim=-1"
                    )
                # Pyro adds no particle plate for a single particle.
                log_w = log_w + sign * site["log_prob"].reshape(self.num_particles, -1)
        assert isinstance(log_w, torch.Tensor)
        return log_w  # (num_particles, batch)

    def bound(self, model, guide, *args: Any, **kwargs: Any) -> torch.Tensor:
        """The IWAE bound of each data point, ``(batch,)``."""
        log_w = self.log_weights(model, guide, *args, **kwargs)
        return torch.logsumexp(log_w, dim=0) - math.log(self.num_particles)

    def differentiable_loss(self, model, guide, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Minus the bound, summed over the batch."""
        return -self.bound(model, guide, *args, **kwargs).sum()

    def loss(self, model, guide, *args: Any, **kwargs: Any) -> float:
        with torch.no_grad():
            return self.differentiable_loss(model, guide, *args, **kwargs).item()

    def loss_and_grads(self, model, guide, *args: Any, **kwargs: Any) -> float:
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward()
        return loss.item()


@dataclass
class ElboTerms:
    """Per-data-point terms, each ``(batch,)``: ``elbo = recon - kl``."""

    recon: torch.Tensor
    kl: torch.Tensor

    @property
    def elbo(self) -> torch.Tensor:
        return self.recon - self.kl


def elbo_terms(model, guide, x: torch.Tensor) -> ElboTerms:
    """One-sample E_q[log p(x|z)] and KL(q || p) for each data point of ``x``.

    Read off Pyro traces of ``guide`` and of ``model`` replayed on it, so it
    works for any guide and prior; the KL is analytic when torch knows it and
    a one-sample estimate log q(z|x) - log p(z) otherwise. Site scales
    (β-weighting) are ignored: these are the terms of the plain ELBO.
    """
    guide_trace = poutine.trace(guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x)
    recon = model_trace.nodes[OBS]["fn"].log_prob(x)
    q_site, p_site = guide_trace.nodes[LATENT], model_trace.nodes[LATENT]
    try:
        kl = kl_divergence(q_site["fn"], p_site["fn"])
    except NotImplementedError:
        z = q_site["value"]
        kl = q_site["fn"].log_prob(z) - p_site["fn"].log_prob(z)
    return ElboTerms(recon=recon, kl=kl)
