"""Training objectives and the per-data-point terms of the ELBO.

ELBO(x) = E_q[log p(x|z)] - KL(q(z|x) || p(z)) <= log p(x)
(Kingma & Welling 2014). The training objective is a Pyro ELBO estimator,
:class:`~pyro.infer.TraceMeanField_ELBO` by default (analytic KL where
torch registers one, sampled otherwise) or :class:`~pyro.infer.Trace_ELBO`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from pyro import poutine
from pyro.infer import ELBO, Trace_ELBO, TraceMeanField_ELBO
from torch.distributions import kl_divergence

from pyrovae.config import TrainConfig
from pyrovae.errors import ConfigError
from pyrovae.sites import LATENT, OBS

_ELBOS: dict[str, type[ELBO]] = {"meanfield": TraceMeanField_ELBO, "trace": Trace_ELBO}


def make_objective(config: TrainConfig) -> ELBO:
    """The training objective of ``config``: a Pyro ELBO object whose
    ``differentiable_loss(model, guide, x)`` is minimized (summed over the batch)."""
    return make_elbo(config.elbo, config.particles)


def make_elbo(name: str, particles: int = 1) -> ELBO:
    """The Pyro ELBO estimator ``name`` with ``particles`` vectorized samples of z."""
    try:
        cls = _ELBOS[name]
    except KeyError:
        raise ConfigError(f"--elbo must be one of {', '.join(_ELBOS)}, got {name!r}") from None
    return cls(num_particles=particles, vectorize_particles=particles > 1, max_plate_nesting=1)


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
