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
import sys
from dataclasses import dataclass
from typing import Any

import torch
from pyro import poutine
from pyro.infer import ELBO, Trace_ELBO, TraceMeanField_ELBO
from pyro.infer.enum import get_importance_trace
from torch.distributions import kl_divergence

from pyrovae.config import TrainConfig
from pyrovae.data.pixels import to_unit_float
from pyrovae.errors import ConfigError
from pyrovae.model.vae import VAE
from pyrovae.runtime import eval_mode
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
    obs = model_trace.nodes[OBS]
    recon = obs["fn"].log_prob(obs["value"])  # the model's x: missing values filled and masked
    q_site, p_site = guide_trace.nodes[LATENT], model_trace.nodes[LATENT]
    try:
        kl = kl_divergence(q_site["fn"], p_site["fn"])
    except NotImplementedError:
        z = q_site["value"]
        kl = q_site["fn"].log_prob(z) - p_site["fn"].log_prob(z)
    return ElboTerms(recon=recon, kl=kl)


#: Monte Carlo standard error (nats) that :func:`average_elbo_terms` aims for by default.
ELBO_TARGET_STDERR = 0.02
#: Most draws of z per data point that :func:`average_elbo_terms` takes by default.
ELBO_MAX_DRAWS = 100
#: Most draws of z of all data points together (decoder passes) it takes by default:
#: 50,000 keeps a test set of 10,000 images to 5 draws each, a tenth of an epoch's
#: training passes on 60,000, while the digits' 360 get the 40 or so they need.
ELBO_MAX_IMAGE_DRAWS = 50_000


@dataclass
class ElboEstimate:
    """Per-data-point ELBO terms averaged over ``draws`` draws of z each, in nats.

    ``recon``, ``kl`` and ``elbo`` are ``(N,)`` float64 means over the draws;
    ``*_var`` the Monte Carlo variance of each of those means (the sample
    variance over the draws divided by ``draws``; zero for an analytic KL).
    """

    recon: torch.Tensor
    kl: torch.Tensor
    recon_var: torch.Tensor
    kl_var: torch.Tensor
    elbo_var: torch.Tensor
    draws: int

    @property
    def elbo(self) -> torch.Tensor:
        return self.recon - self.kl

    def mc_stderr(self, term: str = "elbo") -> float:
        """Monte Carlo standard error of the mean of ``term`` over the N points.

        The error of this estimate given the images: how far another evaluation
        of the same checkpoint on the same images would move the mean.
        """
        var = {"elbo": self.elbo_var, "recon": self.recon_var, "kl": self.kl_var}[term]
        return float(var.sum().sqrt() / var.numel())


class _Moments:
    """Running mean and sum of squared deviations per data point (Welford), float64."""

    def __init__(self, n: int, device: torch.device) -> None:
        self.mean = torch.zeros(n, dtype=torch.float64, device=device)
        self.m2 = torch.zeros_like(self.mean)

    def add(self, value: torch.Tensor, count: int, index: slice = slice(None)) -> None:
        """Fold in the ``count``-th draw ``value`` of the points ``index``."""
        mean, m2 = self.mean[index], self.m2[index]  # views: updated in place
        delta = value.double() - mean
        mean += delta / count
        m2 += delta * (value.double() - mean)

    def mean_var(self, count: int) -> torch.Tensor:
        """Variance of the running mean, ``(N,)``; NaN with one draw."""
        if count < 2:
            return torch.full_like(self.mean, math.nan)
        return self.m2 / (count - 1) / count


@torch.no_grad()
def average_elbo_terms(
    model,
    guide,
    images: torch.Tensor,
    *,
    target_stderr: float = ELBO_TARGET_STDERR,
    max_draws: int = ELBO_MAX_DRAWS,
    max_image_draws: int = ELBO_MAX_IMAGE_DRAWS,
    min_draws: int = 2,
    batch_size: int = 1000,
    progress: bool = False,
) -> ElboEstimate:
    """:func:`elbo_terms` of every image, averaged over as many draws as the mean needs.

    Draws z for every image in rounds, one per image per round, until the Monte
    Carlo standard error of the mean ELBO over the images falls below
    ``target_stderr`` nats (judged from the draws so far, after ``min_draws``)
    or ``max_draws`` rounds, or ``max_image_draws`` draws of all images together,
    are done (at least ``min_draws``). With one draw per image the mean of a few
    hundred images moves by about 0.1 nats between evaluations; averaging removes
    that noise at the cost of more decoder passes, which stay few where the
    images are many (the standard error of a mean falls with their number).

    Parameters
    ----------
    model, guide
        Pyro functions of ``x`` (e.g. ``vae.model`` and ``vae.guide``).
    images
        ``(N, C, H, W)`` in the stored form (``uint8`` or float in [0, 1]).
    progress
        A progress bar on stderr over the rounds of draws.

    Returns
    -------
    ElboEstimate
    """
    if not 1 <= min_draws <= max_draws:
        raise ConfigError(f"need 1 <= min_draws <= max_draws, got {min_draws}, {max_draws}")
    n = images.shape[0]
    max_draws = max(min_draws, min(max_draws, max_image_draws // max(n, 1)))
    batches = [
        (slice(i, i + batch_size), to_unit_float(images[i : i + batch_size]))
        for i in range(0, n, batch_size)
    ]
    moments = {term: _Moments(n, images.device) for term in ("recon", "kl", "elbo")}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=max_draws, desc="ELBO draws", leave=False, file=sys.stderr, disable=None)
    draws = 0
    while draws < max_draws:
        draws += 1
        if bar is not None:
            bar.update()
        for index, x in batches:
            terms = elbo_terms(model, guide, x)
            for name, value in (("recon", terms.recon), ("kl", terms.kl), ("elbo", terms.elbo)):
                moments[name].add(value, draws, index)
        if draws >= max(min_draws, 2):
            stderr = float(moments["elbo"].mean_var(draws).sum().sqrt() / n)
            if stderr < target_stderr:
                break
    if bar is not None:
        bar.close()
    return ElboEstimate(
        recon=moments["recon"].mean,
        kl=moments["kl"].mean,
        recon_var=moments["recon"].mean_var(draws),
        kl_var=moments["kl"].mean_var(draws),
        elbo_var=moments["elbo"].mean_var(draws),
        draws=draws,
    )


@torch.no_grad()
def evaluate_elbo(
    vae: VAE,
    images: torch.Tensor,
    batch_size: int = 1000,
    *,
    target_stderr: float = ELBO_TARGET_STDERR,
    max_draws: int = ELBO_MAX_DRAWS,
) -> dict[str, float]:
    """Mean per-data-point ELBO, reconstruction term and KL (nats) over ``images``.

    Each image's terms are averaged over enough draws of z that the Monte Carlo
    standard error of the mean ELBO is below ``target_stderr``, within at most
    ``max_draws`` draws per image and 50,000 in all
    (:func:`pyrovae.inference.objectives.average_elbo_terms`); the standard error reached is
    returned either way.
    Returns ``elbo``, ``recon``, ``kl``, ``elbo_mc_stderr`` and ``draws``.
    """
    with eval_mode(vae):
        estimate = average_elbo_terms(
            vae.model,
            vae.guide,
            images,
            target_stderr=target_stderr,
            max_draws=max_draws,
            batch_size=batch_size,
        )
    recon, kl = float(estimate.recon.mean()), float(estimate.kl.mean())
    return {
        "elbo": recon - kl,
        "recon": recon,
        "kl": kl,
        "elbo_mc_stderr": estimate.mc_stderr("elbo"),
        "draws": estimate.draws,
    }
