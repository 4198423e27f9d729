"""Inference gaps of Cremer, Li & Duvenaud (2018), "Inference Suboptimality in
Variational Autoencoders": log p(x) - ELBO(q) = approximation gap
(log p(x) - ELBO(q*)) + amortization gap (ELBO(q*) - ELBO(q)), with q*
fitted to each point alone (:mod:`pyrovae.inference.local`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch.distributions import Distribution

from pyrovae.data.pixels import to_unit_float
from pyrovae.inference.importance import auto_chunk_size, log_importance_weights
from pyrovae.inference.local import CORRELATED_KINDS, LocalPosterior, fit_local_posterior
from pyrovae.inference.stats import mc_standard_error, standard_error
from pyrovae.model.vae import VAE
from pyrovae.runtime import eval_mode, module_device


@dataclass
class GapsResult:
    """Inference gaps of Cremer, Li & Duvenaud (2018), means over ``n`` images (nats),
    each with its Monte Carlo standard error.

    log p(x) - ELBO(q) = ``approximation_gap`` (log p(x) - ELBO(q*)) +
    ``amortization_gap`` (ELBO(q*) - ELBO(q)), where q* of family ``kind`` is
    fitted to each image alone with the decoder fixed
    (:func:`pyrovae.inference.local.fit_local_posterior`, ``iterations`` steps in
    all, ``converged`` when every fit stopped on its own). log p(x) is one
    importance-sampling estimate from the defensive mixture of ``proposal``
    (equal weights), ``draws`` draws of each; ELBO(q) and ELBO(q*) are means
    over the draws of their own component. ``per_point`` holds the lists, and
    ``stderr`` each figure's standard error over the images (by the same names).
    """

    n: int
    kind: str
    proposal: list[str]
    draws: int
    iterations: int
    converged: bool
    log_px: float
    log_px_mc_stderr: float
    elbo_amortized: float
    elbo_amortized_mc_stderr: float
    elbo_local: float
    elbo_local_mc_stderr: float
    approximation_gap: float
    approximation_gap_mc_stderr: float
    amortization_gap: float
    amortization_gap_mc_stderr: float
    per_point: dict[str, list[float]] = field(default_factory=dict)
    stderr: dict[str, float] = field(default_factory=dict)


@dataclass
class _Stratum:
    """One mixture component's draws: log p(x, z) ``(k, B)`` and log r_c(z) for every
    component c ``(C, k, B)``."""

    log_joint: torch.Tensor
    log_r: torch.Tensor


@torch.no_grad()
def _draw_strata(
    vae: VAE, x: torch.Tensor, components: Sequence[Distribution], k: int, chunk: int
) -> list[_Stratum]:
    strata = []
    for own in components:
        joints, densities = [], []
        for start in range(0, k, chunk):
            z = own.sample((min(chunk, k - start),))  # (chunk, B, L)
            # The component that drew z first: a flow scores its own draws from its cache.
            order = [own, *(c for c in components if c is not own)]
            scored = {id(c): c.log_prob(z).double() for c in order}  # each (chunk, B)
            densities.append(torch.stack([scored[id(c)] for c in components]))
            joints.append(vae.log_joint(x, z).double())
        strata.append(_Stratum(torch.cat(joints), torch.cat(densities, dim=1)))
    return strata


@dataclass
class _MixtureEstimate:
    """Per point ``(B,)``: log p(x) and ELBO(q*), their Monte Carlo variances and the
    covariance of the two estimates."""

    log_px: torch.Tensor
    log_px_var: torch.Tensor
    elbo_local: torch.Tensor
    elbo_local_var: torch.Tensor
    cov: torch.Tensor


def _mixture_estimates(strata: Sequence[_Stratum], local_index: int) -> _MixtureEstimate:
    """Per point: log p(x), its MC variance, ELBO(q*) and its variance, and their covariance.

    Stratified defensive importance sampling (Hesterberg 1995): k draws from each
    of the C components of r = (1/C) sum_c r_c, weights w = p(x, z) / r(z), which
    are at most C p(x, z) / r_c(z) for every c, so bounded by the best component's.
    p(x) ~ (1/C) sum_c mean_c(w): unbiased, so its log is a stochastic lower bound.
    """
    c = len(strata)
    log_w = [s.log_joint - (torch.logsumexp(s.log_r, dim=0) - math.log(c)) for s in strata]
    k = log_w[0].shape[0]
    log_px = torch.logsumexp(torch.cat(log_w), dim=0) - math.log(c * k)  # (B,)
    scaled = [torch.exp(lw - log_px) for lw in log_w]  # w / p_hat, each (k, B)
    log_px_var = sum(w.var(0) for w in scaled) / (c**2 * k)
    own = strata[local_index]
    ratio = own.log_joint - own.log_r[local_index]  # log p(x, z) - log q*(z), (k, B)
    elbo = ratio.mean(0)
    elbo_var = ratio.var(0) / k
    w_local = scaled[local_index]
    cov = ((w_local - w_local.mean(0)) * (ratio - elbo)).sum(0) / (k - 1) / (c * k)
    return _MixtureEstimate(log_px, torch.as_tensor(log_px_var), elbo, elbo_var, cov)


def inference_gaps(
    vae: VAE,
    images: torch.Tensor,
    k: int = 3000,
    *,
    kind: str = "auto",
    max_steps: int = 5000,
    chunk_size: int | None = None,
    progress: bool = False,
) -> GapsResult:
    """Approximation and amortization gaps for each image of ``images`` (a few).

    ``kind`` is the family of q*: ``normal``, ``mvn`` or ``iaf``; ``auto`` takes
    the family the guide declares (``Guide.local_family``: ``normal`` for the
    mean-field guide, as the gaps are defined within the guide's family; ``iaf``
    otherwise). log p(x) is estimated once, by
    importance sampling from the defensive mixture of the amortized q(z|x) (when
    it has a density at any z), q* and, when q* is a diagonal Gaussian (whose
    weights can have infinite variance on a correlated posterior), a fitted
    full-covariance Gaussian; ``k`` draws in all. Its expectation is a lower
    bound on log p(x), unlike the larger of two estimates.
    """
    if kind == "auto":
        kind = vae.guide_net.local_family
    x = to_unit_float(images.to(module_device(vae)))
    fits = [kind] if kind in CORRELATED_KINDS else [kind, "mvn"]
    with eval_mode(vae):
        local = {
            name: fit_local_posterior(
                vae,
                x,
                name,  # type: ignore[arg-type]
                max_steps=max_steps,
                progress=progress,
            )
            for name in fits
        }
        # q itself only when it can score draws it did not make (a closed-form inverse).
        in_mixture = getattr(vae.guide_net, "scores_any_z", True)
        names = (["q"] if in_mixture else []) + [f"q* ({name})" for name in fits]
        components = ([vae.qz(x)] if in_mixture else []) + [local[f].posterior for f in fits]
        per_component = max(2, k // len(components))
        chunk = min(per_component, chunk_size or auto_chunk_size(vae, x.shape[0]))
        strata = _draw_strata(vae, x, components, per_component, chunk)
        mixture = _mixture_estimates(strata, names.index(f"q* ({kind})"))
        if in_mixture:
            q_ratio = strata[0].log_joint - strata[0].log_r[0]  # (k, B)
        else:
            q_ratio = _own_log_ratios(vae, x, per_component, chunk)
    return _gaps_result(kind, names, per_component, list(local.values()), mixture, q_ratio)


@torch.no_grad()
def _own_log_ratios(vae: VAE, x: torch.Tensor, draws: int, chunk: int) -> torch.Tensor:
    """log p(x, z) - log q(z|x) at ``draws`` draws of q(z|x) ``(draws, B)``, float64: its
    own draws, which a flow without an inverse scores."""
    return torch.cat(
        [log_importance_weights(vae, x, min(chunk, draws - i)) for i in range(0, draws, chunk)]
    ).double()


def _gaps_result(
    kind: str,
    names: list[str],
    draws: int,
    fits: Sequence[LocalPosterior],
    mixture: _MixtureEstimate,
    q_ratio: torch.Tensor,
) -> GapsResult:
    """The gaps from the mixture's estimates and the amortized log ratios ``(k, B)``."""
    elbo_q, elbo_q_var = q_ratio.mean(0), q_ratio.var(0) / q_ratio.shape[0]
    log_px, elbo_local = mixture.log_px, mixture.elbo_local
    approximation = log_px - elbo_local
    amortization = elbo_local - elbo_q
    approximation_var = mixture.log_px_var + mixture.elbo_local_var - 2 * mixture.cov
    per_point = {"log_px": log_px, "elbo_amortized": elbo_q, "elbo_local": elbo_local,
                 "approximation_gap": approximation, "amortization_gap": amortization}  # fmt: skip
    return GapsResult(
        n=log_px.shape[0],
        kind=kind,
        proposal=names,
        draws=draws,
        iterations=sum(f.iterations for f in fits),
        converged=all(f.converged for f in fits),
        log_px=float(log_px.mean()),
        log_px_mc_stderr=mc_standard_error(mixture.log_px_var),
        elbo_amortized=float(elbo_q.mean()),
        elbo_amortized_mc_stderr=mc_standard_error(elbo_q_var),
        elbo_local=float(elbo_local.mean()),
        elbo_local_mc_stderr=mc_standard_error(mixture.elbo_local_var),
        approximation_gap=float(approximation.mean()),
        approximation_gap_mc_stderr=mc_standard_error(approximation_var),
        amortization_gap=float(amortization.mean()),
        amortization_gap_mc_stderr=mc_standard_error(mixture.elbo_local_var + elbo_q_var),
        per_point={name: values.tolist() for name, values in per_point.items()},
        stderr={name: standard_error(values) for name, values in per_point.items()},
    )
