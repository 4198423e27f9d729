"""Non-amortized guides: q*(z|x) optimized separately for each data point.

An amortized guide shares one encoder across all data points; the best
per-data-point posterior of the same (or a richer) family, fitted with the
decoder fixed, shows what that sharing costs. Cremer, Li & Duvenaud (2018),
"Inference Suboptimality in Variational Autoencoders", split the gap
log p(x) - ELBO(q) into

- the approximation gap log p(x) - ELBO(q*), the price of the family, and
- the amortization gap ELBO(q*) - ELBO(q), the price of the encoder.

The families of q*, one independent member per data point:

- ``normal``: a diagonal Gaussian (the family of the ``normal`` amortized guide);
- ``mvn``: a full-covariance Gaussian, which can follow a correlated posterior
  (as an importance proposal it keeps the weights' variance finite where a
  diagonal Gaussian narrower than the posterior would not);
- ``iaf``: the ``mvn`` fit pushed through inverse autoregressive flows
  (Kingma et al. 2016), Pyro's :class:`~pyro.infer.autoguide.AutoNormalizingFlow`,
  one per data point.

The Gaussian fits take all points in one vectorized optimization with the
path-derivative gradient of Roeder, Wu & Duvenaud (2017), "Sticking the
Landing": the score term of the ordinary reparameterized gradient, whose
variance does not vanish at the optimum, is dropped, so for a Gaussian
posterior the gradient noise goes to zero as q* reaches it and the fit settles
on the optimum instead of rattling around it. Every fit runs until its
smoothed objective stops improving (:func:`optimize_until_converged`) and
reports how many steps that took.

Example
-------
>>> x = to_unit_float(run.data().test[:8])
>>> local = fit_local_posterior(run.vae, x, kind="mvn")
>>> local.posterior.sample((100,)).shape     # (100, 8, n_latent)
>>> local.iterations, local.converged
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pyro
import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
from pyro.distributions.torch_transform import TransformModule
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import AutoNormalizingFlow
from torch import nn
from torch.distributions import constraints

from pyrovae.errors import ConfigError
from pyrovae.model.vae import VAE
from pyrovae.runtime import frozen
from pyrovae.sites import DATA_PLATE, LATENT, OBS

LocalKind = Literal["normal", "mvn", "iaf"]

LOCAL_KINDS: tuple[str, ...] = ("normal", "mvn", "iaf")

#: Families of q* that can represent correlations between latent units.
CORRELATED_KINDS: tuple[str, ...] = ("mvn", "iaf")

_EMPTY = torch.Size()

_Shape = torch.Size | list[int] | tuple[int, ...]

#: The factor of :func:`fixed_decoder_model` that turns N(0, I) into the VAE's prior.
_PRIOR_FACTOR = "z_prior"

#: Draws of an amortized guide without a closed-form mean or scale to start q* at.
_START_DRAWS = 256


def fixed_decoder_model(vae: VAE) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model p(z) p(x|z) of ``vae`` as a Pyro function of ``x`` with no parameters.

    Unlike :meth:`VAE.model` it registers no module with Pyro, so the networks
    stay fixed constants for autoguides and for NUTS, and it ignores ``beta``.
    z is drawn under N(0, I) and a factor turns its density into p(z): autoguides
    map a site's support onto R^n, which a mixture prior's (``mog``, ``vamp``) cannot.
    """

    def model(x: torch.Tensor) -> torch.Tensor:
        with pyro.plate(DATA_PLATE, x.shape[0], dim=-1):
            zero = torch.zeros(vae.n_latent, dtype=x.dtype, device=x.device)
            base = dist.Normal(zero, 1.0).to_event(1)
            z = pyro.sample(LATENT, base)  # (batch, n_latent)
            pyro.factor(_PRIOR_FACTOR, vae.prior().log_prob(z) - base.log_prob(z))  # (batch,)
            observed, mask = vae.observed(x)  # missing values left out, for incomplete data
            pyro.sample(OBS, vae.px_observed(z, mask), obs=observed)
        return z

    return model


class StackedPosterior(dist.TorchDistribution):
    """Independent per-data-point distributions over ``(n_latent,)`` as one batch ``(B,)``."""

    arg_constraints: dict[str, constraints.Constraint] = {}
    support = constraints.real_vector

    def __init__(self, parts: Sequence[torch.distributions.Distribution]) -> None:
        self.parts = list(parts)
        event_shape = self.parts[0].event_shape
        super().__init__(torch.Size([len(self.parts)]), event_shape, validate_args=False)

    def sample(self, sample_shape: _Shape = _EMPTY) -> torch.Tensor:
        return torch.stack([p.sample(sample_shape) for p in self.parts], dim=-2)

    def rsample(self, sample_shape: _Shape = _EMPTY) -> torch.Tensor:
        return torch.stack([p.rsample(sample_shape) for p in self.parts], dim=-2)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return torch.stack([p.log_prob(value[..., i, :]) for i, p in enumerate(self.parts)], -1)


@dataclass
class LocalPosterior:
    """Result of :func:`fit_local_posterior`.

    Attributes
    ----------
    posterior
        q*(z|x) as one distribution with batch shape ``(B,)`` and event shape
        ``(n_latent,)``, detached from the optimizer.
    kind
        ``normal``, ``mvn`` or ``iaf``.
    losses
        The negative ELBO per data point (mean over the points fitted together),
        per optimization step (for ``iaf``: the Gaussian stage, then each point's
        flow stage, averaged step by step over the points).
    iterations
        Optimization steps taken, all stages and points together.
    converged
        Whether every fit stopped because its smoothed objective stopped
        improving, rather than at the step limit.
    """

    posterior: torch.distributions.Distribution
    kind: str
    losses: list[float]
    iterations: int
    converged: bool


@dataclass
class Convergence:
    """Outcome of :func:`optimize_until_converged`."""

    losses: list[float]
    iterations: int
    converged: bool


def optimize_until_converged(
    parameters: Sequence[torch.Tensor],
    loss_fn: Callable[[], torch.Tensor],
    *,
    lr: float,
    max_steps: int,
    window: int = 50,
    tol: float = 1e-3,
    decays: int = 2,
    desc: str | None = None,
) -> Convergence:
    """Adam on ``loss_fn()`` until the objective, smoothed over ``window`` steps, settles.

    The smoothed objective is the mean loss of each window of steps. When a
    window improves on the one before by less than ``tol`` or than twice the
    standard error of that difference (no improvement the noise can tell), the
    rate is cut tenfold; after ``decays`` cuts the next such window ends the fit
    (converged). ``max_steps`` bounds the whole run (not converged).

    ``loss_fn`` returns the loss per data point ``(B,)``, minimized summed (each
    point's parameters follow their own gradient) and judged by the mean. With
    ``desc``, a progress bar of that name on stderr (on a terminal).
    """
    bar = None
    if desc is not None:
        from tqdm.auto import tqdm

        options = {"unit": "step", "leave": False, "file": sys.stderr, "disable": None}
        bar = tqdm(total=max_steps, desc=desc, **options)
    try:
        return _optimize(parameters, loss_fn, lr, max_steps, window, tol, decays, bar)
    finally:
        if bar is not None:
            bar.close()


def _optimize(
    parameters: Sequence[torch.Tensor],
    loss_fn: Callable[[], torch.Tensor],
    lr: float,
    max_steps: int,
    window: int,
    tol: float,
    decays: int,
    bar: Any,
) -> Convergence:
    optimizer = torch.optim.Adam(parameters, lr=lr)
    losses: list[float] = []
    previous: torch.Tensor | None = None
    cuts = 0
    for step in range(1, max_steps + 1):
        loss = loss_fn()  # (B,)
        optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()
        optimizer.step()
        losses.append(float(loss.detach().mean()))
        if bar is not None:
            bar.update()
        if step % window:
            continue
        current = torch.tensor(losses[-window:], dtype=torch.float64)
        if previous is not None:
            # The noise of one step's loss from successive differences, which a
            # trend (the descent itself) barely inflates, unlike the window's spread.
            noise_var = float(torch.cat([previous, current]).diff().var()) / 2
            stderr = math.sqrt(2 * noise_var / window)  # of the difference of two window means
            if float(previous.mean() - current.mean()) < max(tol, 2 * stderr):
                if cuts == decays:
                    return Convergence(losses, step, True)
                cuts += 1
                for group in optimizer.param_groups:
                    group["lr"] /= 10
        previous = current
    return Convergence(losses, max_steps, False)


class _LocalGaussian(nn.Module):
    """One Gaussian per data point: ``loc`` ``(B, L)`` and a lower-triangular scale.

    ``full`` keeps the strictly lower triangle (full covariance); otherwise the
    scale is diagonal. The diagonal is ``exp(log_diag)``.
    """

    mask: torch.Tensor

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, full: bool) -> None:
        super().__init__()
        self.full = full
        self.loc = nn.Parameter(loc.clone())
        self.log_diag = nn.Parameter(scale.log().clone())
        n = loc.shape[-1]
        self.lower = nn.Parameter(loc.new_zeros(*loc.shape, n)) if full else None
        mask = torch.ones(n, n).tril(-1).to(loc)
        self.register_buffer("mask", mask)

    def distribution(self, detach: bool = False) -> torch.distributions.Distribution:
        """The Gaussians (batch ``(B,)``); ``detach`` cuts the parameters from the graph."""
        loc: torch.Tensor = self.loc
        log_diag: torch.Tensor = self.log_diag
        lower: torch.Tensor | None = self.lower
        if detach:
            loc, log_diag = loc.detach(), log_diag.detach()
            lower = None if lower is None else lower.detach()
        # Unvalidated: the parameterization guarantees the constraints, and the check
        # of a triangular scale costs more than the rest of a step.
        if lower is None:
            return dist.Normal(loc, log_diag.exp(), validate_args=False).to_event(1)
        tril = lower * self.mask + torch.diag_embed(log_diag.exp())  # (B, L, L)
        return dist.MultivariateNormal(loc, scale_tril=tril, validate_args=False)


@dataclass
class LaplaceStart:
    """The mode of log p(x, z) per point and the inverse of minus its Hessian there."""

    loc: torch.Tensor  # (B, L)
    covariance: torch.Tensor  # (B, L, L)

    @property
    def precision_diagonal(self) -> torch.Tensor:
        return torch.linalg.inv(self.covariance).diagonal(dim1=-2, dim2=-1)  # (B, L)


#: Floor on the eigenvalues of minus the Hessian at the mode (flat or saddle directions).
_MIN_CURVATURE = 1e-3


def laplace_start(vae: VAE, x: torch.Tensor, *, max_iter: int = 200) -> LaplaceStart:
    """Laplace approximation of p(z|x) for each image: where the Gaussian fits start.

    The mode of log p(z) + log p(x|z) by L-BFGS from the amortized q(z|x)'s mean,
    then minus the Hessian there (one backward pass per latent unit; the points
    are independent, so the Hessian of the sum is block-diagonal), its
    eigenvalues floored at a small positive curvature. For a Gaussian posterior
    (probabilistic PCA) this is the posterior itself, and the best diagonal
    Gaussian is read off it (variances 1 / precision_ii); elsewhere it is a start
    near the optimum that the stochastic fit refines, which it would otherwise
    approach slowly along correlated directions.
    """
    with torch.no_grad():
        z0 = _amortized_mean(vae, x)
    z = z0.clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS(
        [z], max_iter=max_iter, line_search_fn="strong_wolfe", tolerance_change=1e-9
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        # A fresh tensor each call: a flow prior caches its inverse by tensor identity,
        # and would hand back the previous call's graph.
        loss = -vae.log_joint(x, z.clone()).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    mode = z.detach()
    if not bool(torch.isfinite(mode).all()):
        mode = z0  # a diverged search: start at the amortized mean instead
    z = mode.clone().requires_grad_(True)
    grad = torch.autograd.grad(vae.log_joint(x, z).sum(), z, create_graph=True)[0]  # (B, L)
    rows = [
        torch.autograd.grad(grad[:, u].sum(), z, retain_graph=True)[0] for u in range(vae.n_latent)
    ]
    precision = -torch.stack(rows, dim=1).detach().double()  # (B, L, L)
    precision = (precision + precision.transpose(-1, -2)) / 2
    values, vectors = torch.linalg.eigh(precision)
    values = values.clamp(min=_MIN_CURVATURE)
    covariance = (vectors / values.unsqueeze(-2)) @ vectors.transpose(-1, -2)
    return LaplaceStart(mode, covariance.to(x.dtype))


def _amortized_mean(vae: VAE, x: torch.Tensor) -> torch.Tensor:
    qz = vae.qz(x)
    try:
        return qz.mean
    except NotImplementedError:
        return qz.sample((_START_DRAWS,)).mean(0)


def _fit_gaussian(
    vae: VAE,
    x: torch.Tensor,
    full: bool,
    *,
    max_steps: int,
    lr: float,
    particles: int,
    progress: bool = False,
) -> tuple[torch.distributions.Distribution, Convergence]:
    """All points' Gaussians in one vectorized fit with the path-derivative gradient,
    started at the Laplace approximation."""
    start = laplace_start(vae, x)
    if full:
        tril = torch.linalg.cholesky(start.covariance.double()).to(x.dtype)  # (B, L, L)
        q = _LocalGaussian(start.loc, tril.diagonal(dim1=-2, dim2=-1), full)
        with torch.no_grad():
            assert q.lower is not None
            q.lower.copy_(tril.tril(-1))
    else:
        q = _LocalGaussian(start.loc, start.precision_diagonal.rsqrt().to(x.dtype), full)

    def loss() -> torch.Tensor:
        z = q.distribution().rsample((particles,))  # (particles, B, L)
        log_ratio = vae.log_joint(x, z) - q.distribution(detach=True).log_prob(z)
        return -log_ratio.mean(0)  # (B,)

    desc = f"q* ({'mvn' if full else 'normal'}) of {x.shape[0]} images" if progress else None
    outcome = optimize_until_converged(
        list(q.parameters()), loss, lr=lr, max_steps=max_steps, desc=desc
    )
    with torch.no_grad():
        return q.distribution(detach=True), outcome


class _LowerCholeskyAffine(TransformModule):
    """z = loc + L u with learnable ``loc`` ``(n,)`` and lower-triangular ``L`` ``(n, n)``."""

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, loc: torch.Tensor, scale_tril: torch.Tensor) -> None:
        super().__init__(cache_size=1)
        self.loc = nn.Parameter(loc.clone())
        self.lower = nn.Parameter(scale_tril.tril(-1).clone())
        self.log_diag = nn.Parameter(scale_tril.diagonal().log().clone())

    def _tril(self) -> torch.Tensor:
        return self.lower.tril(-1) + torch.diag_embed(self.log_diag.exp())

    def _call(self, u: torch.Tensor) -> torch.Tensor:
        return self.loc + (self._tril() @ u.unsqueeze(-1)).squeeze(-1)

    def _inverse(self, z: torch.Tensor) -> torch.Tensor:
        centred = (z - self.loc).unsqueeze(-1)
        tril = self._tril().expand(*centred.shape[:-2], -1, -1)
        return torch.linalg.solve_triangular(tril, centred, upper=False).squeeze(-1)

    def log_abs_det_jacobian(self, u: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.log_diag.sum().expand(u.shape[:-1])


def _fit_flows(
    vae: VAE,
    x: torch.Tensor,
    start: torch.distributions.Distribution,
    *,
    max_steps: int,
    lr: float,
    particles: int,
    hidden_dim: int | None,
    num_transforms: int,
    progress: bool = False,
) -> tuple[torch.distributions.Distribution, Convergence]:
    """For each point, IAF layers followed by an affine map started at its ``mvn`` fit."""
    assert isinstance(start, dist.MultivariateNormal)
    model = fixed_decoder_model(vae)
    hidden = [hidden_dim or max(16, 4 * vae.n_latent)]
    elbo = Trace_ELBO(num_particles=particles, vectorize_particles=True, max_plate_nesting=1)
    parts: list[torch.distributions.Distribution] = []
    runs: list[Convergence] = []
    for i in range(x.shape[0]):

        def init_transform(dim: int, i: int = i) -> T.ComposeTransformModule:
            return _flow_layers(dim, hidden, num_transforms, start.loc[i], start.scale_tril[i])

        guide = AutoNormalizingFlow(model, init_transform)
        point = x[i : i + 1]
        guide(point)  # creates the guide's parameters

        def loss(guide: AutoNormalizingFlow = guide, point: torch.Tensor = point) -> torch.Tensor:
            return elbo.differentiable_loss(model, guide, point).reshape(1)

        desc = f"q* (iaf) of image {i + 1}/{x.shape[0]}" if progress else None
        runs.append(
            optimize_until_converged(
                list(guide.parameters()), loss, lr=lr, max_steps=max_steps, desc=desc
            )
        )
        for p in guide.parameters():
            p.requires_grad_(False)
        parts.append(guide.get_posterior())  # over the (n_latent,) vector of one point
    return StackedPosterior(parts), _pooled(runs)


def _flow_layers(
    dim: int, hidden: list[int], num_transforms: int, loc: torch.Tensor, scale_tril: torch.Tensor
) -> T.ComposeTransformModule:
    """``num_transforms`` IAF layers, reversed between layers, then the affine map
    ``loc`` + ``scale_tril`` u of one point's ``mvn`` fit."""
    # On the VAE's device: the autoguide is never moved, and takes the
    # device of its base distribution from these layers' parameters.
    device = loc.device
    layers: list[TransformModule] = []
    for j in range(num_transforms):
        if j:
            layers.append(T.permute(dim, torch.arange(dim - 1, -1, -1, device=device)))
        layers.append(T.affine_autoregressive(dim, hidden).to(device))
    return T.ComposeTransformModule([*layers, _LowerCholeskyAffine(loc, scale_tril)])


def _pooled(runs: Sequence[Convergence]) -> Convergence:
    """The fits of every point as one: the mean loss step by step, each point's last
    loss carried once it stopped; steps summed; converged when all did."""
    longest = max(len(run.losses) for run in runs)
    losses = [
        sum(run.losses[min(step, len(run.losses) - 1)] for run in runs) / len(runs)
        for step in range(longest)
    ]
    return Convergence(
        losses, sum(run.iterations for run in runs), all(run.converged for run in runs)
    )


def fit_local_posterior(
    vae: VAE,
    x: torch.Tensor,
    kind: LocalKind = "normal",
    *,
    max_steps: int = 5000,
    lr: float = 0.01,
    particles: int = 64,
    hidden_dim: int | None = None,
    num_transforms: int = 2,
    progress: bool = False,
) -> LocalPosterior:
    """Fit q*(z|x) separately for each image of ``x``, with the VAE's networks frozen.

    Parameters
    ----------
    vae
        A trained VAE; its parameters are not changed.
    x
        Images on the [0, 1] scale, ``(B, C, H, W)`` (binary for a binary likelihood).
    kind
        ``normal`` (diagonal Gaussian), ``mvn`` (full-covariance Gaussian), both
        started at the amortized q(z|x)'s mean and sds; or ``iaf``: the ``mvn``
        fit, then for each point ``num_transforms`` affine autoregressive layers
        (IAF; Kingma et al. 2016) followed by an affine map started at that
        point's ``mvn`` fit, so the flow only has to learn the shape.
    max_steps
        Most Adam steps per fit (each stage, and each point's flow); a fit
        stops earlier when its objective has converged
        (:func:`optimize_until_converged`).
    lr
        Initial learning rate, cut tenfold at each plateau (the fits start close to
        the optimum, so a small rate that does not throw them off it).
    particles
        Samples of z per step in the ELBO estimate.
    hidden_dim, num_transforms
        Width (default ``4 * n_latent``, at least 16) and number of the IAF layers.
    progress
        A progress bar per fit on stderr (on a terminal).

    Returns
    -------
    LocalPosterior
    """
    if kind not in LOCAL_KINDS:
        raise ConfigError(f"local posterior kind must be one of {', '.join(LOCAL_KINDS)}")
    if max_steps < 1:
        raise ConfigError(f"max_steps must be at least 1, got {max_steps}")
    with frozen(vae), pyro.get_param_store().scope():
        full = kind != "normal"
        gaussian, fit = _fit_gaussian(
            vae, x, full, max_steps=max_steps, lr=lr, particles=particles, progress=progress
        )
        if kind != "iaf":
            return LocalPosterior(gaussian, kind, fit.losses, fit.iterations, fit.converged)
        flows, flow_fit = _fit_flows(
            vae,
            x,
            gaussian,
            max_steps=max_steps,
            lr=lr,
            particles=particles,
            hidden_dim=hidden_dim,
            num_transforms=num_transforms,
            progress=progress,
        )
    return LocalPosterior(
        flows,
        kind,
        fit.losses + flow_fit.losses,
        fit.iterations + flow_fit.iterations,
        fit.converged and flow_fit.converged,
    )
