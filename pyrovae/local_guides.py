"""Non-amortized guides: q*(z|x) optimized separately for each data point.

An amortized guide shares one encoder across all data points; the best
per-data-point posterior of the same (or a richer) family, fitted with the
decoder fixed, shows what that sharing costs. Cremer, Li & Duvenaud (2018),
"Inference Suboptimality in Variational Autoencoders", split the gap
log p(x) - ELBO(q) into

- the approximation gap log p(x) - ELBO(q*), the price of the family, and
- the amortization gap ELBO(q*) - ELBO(q), the price of the encoder.

q* is one of Pyro's autoguides over the local latents of the model p(z) p(x|z)
with the VAE's networks and prior frozen:

- ``normal``: :class:`~pyro.infer.autoguide.AutoNormal`, a diagonal Gaussian
  per data point (the family of the ``normal`` amortized guide), initialized
  at the encoder's q(z|x);
- ``iaf``: :class:`~pyro.infer.autoguide.AutoNormalizingFlow`, a Gaussian
  pushed through inverse autoregressive flows (Kingma et al. 2016), one per
  data point, started at that point's ``normal`` fit.

Example
-------
>>> x = to_unit_float(run.data().test[:8])
>>> local = fit_local_posterior(run.vae, x, kind="normal", steps=500)
>>> local.posterior.sample((100,)).shape     # (100, 8, n_latent)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import pyro
import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
from pyro.distributions.torch_transform import TransformModule
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import AutoNormal, AutoNormalizingFlow, init_to_value
from torch import nn
from torch.distributions import constraints

from pyrovae.errors import ConfigError
from pyrovae.evaluation import posterior_mean
from pyrovae.model import VAE
from pyrovae.sites import DATA_PLATE, LATENT, OBS

LocalKind = Literal["normal", "iaf"]
LOCAL_KINDS: tuple[str, ...] = ("normal", "iaf")
_EMPTY = torch.Size()
_Shape = torch.Size | list[int] | tuple[int, ...]
#: The factor of :func:`fixed_decoder_model` that turns N(0, I) into the VAE's prior.
_PRIOR_FACTOR = "z_prior"


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
            pyro.sample(OBS, vae.px(z), obs=x)
        return z

    return model


@contextmanager
def frozen(vae: VAE) -> Iterator[VAE]:
    """Turn off gradients of the VAE's parameters (and ``train`` mode) for the block."""
    flags = [p.requires_grad for p in vae.parameters()]
    was_training = vae.training
    vae.eval()
    for p in vae.parameters():
        p.requires_grad_(False)
    try:
        yield vae
    finally:
        for p, flag in zip(vae.parameters(), flags, strict=True):
            p.requires_grad_(flag)
        vae.train(was_training)


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
        ``normal`` or ``iaf``.
    losses
        The negative ELBO summed over the batch, per optimization step (for
        ``iaf``: the Gaussian stage, then the flow stage).
    """

    posterior: torch.distributions.Distribution
    kind: str
    losses: list[float]


def _optimize(
    model: Callable[[torch.Tensor], torch.Tensor],
    guide: torch.nn.Module,
    x: torch.Tensor,
    steps: int,
    lr: float,
    particles: int,
) -> list[float]:
    """Adam on the guide's parameters, the rate decaying tenfold over the run so that the
    last steps settle instead of rattling around the optimum with the ELBO's noise."""
    elbo = Trace_ELBO(
        num_particles=particles, vectorize_particles=particles > 1, max_plate_nesting=1
    )
    guide(x)  # create the guide's parameters before handing them to the optimizer
    optimizer = torch.optim.Adam(guide.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.1 ** (1 / steps))
    losses = []
    for _ in range(steps):
        loss = elbo.differentiable_loss(model, guide, x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    return losses


class _Affine(TransformModule):
    """z = loc + exp(log_scale) * u with learnable ``loc`` and ``log_scale`` ``(n,)``."""

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__(cache_size=1)
        self.loc = nn.Parameter(loc.clone())
        self.log_scale = nn.Parameter(scale.log())

    def _call(self, u: torch.Tensor) -> torch.Tensor:
        return self.loc + self.log_scale.exp() * u

    def _inverse(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self.loc) * torch.exp(-self.log_scale)

    def log_abs_det_jacobian(self, u: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.log_scale.expand(u.shape).sum(-1)


def _fit_normal(
    model: Callable[[torch.Tensor], torch.Tensor],
    vae: VAE,
    x: torch.Tensor,
    steps: int,
    lr: float,
    particles: int,
) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    with torch.no_grad():
        init = posterior_mean(vae.qz(x))  # (B, n_latent), the amortized guide's E_q[z|x]
    guide = AutoNormal(model, init_loc_fn=init_to_value(values={LATENT: init}))
    losses = _optimize(model, guide, x, steps, lr, particles)
    loc = guide.locs.z.detach().clone()  # (B, n_latent)
    scale = guide.scales.z.detach().clone()  # (B, n_latent)
    return loc, scale, losses


def fit_local_posterior(
    vae: VAE,
    x: torch.Tensor,
    kind: LocalKind = "normal",
    *,
    steps: int = 1000,
    lr: float = 0.05,
    particles: int = 8,
    hidden_dim: int | None = None,
    num_transforms: int = 2,
) -> LocalPosterior:
    """Fit q*(z|x) separately for each image of ``x``, with the VAE's networks frozen.

    Parameters
    ----------
    vae
        A trained VAE; its parameters are not changed.
    x
        Images on the [0, 1] scale, ``(B, C, H, W)`` (binary for a binary likelihood).
    kind
        ``normal``: :class:`~pyro.infer.autoguide.AutoNormal`, all points in
        one vectorized fit (the ELBO is a sum over points, so each point's
        parameters follow their own gradient), started at the encoder's mean.
        ``iaf``: that fit, then for each point an
        :class:`~pyro.infer.autoguide.AutoNormalizingFlow` of
        ``num_transforms`` affine autoregressive layers (IAF; Kingma et al.
        2016) followed by an affine map started at the point's Gaussian fit,
        so the flow only has to learn the shape, not the location and scale.
    steps, lr
        Adam steps (per stage) and initial learning rate (decayed tenfold).
    particles
        Samples of z per step in the ELBO estimate.
    hidden_dim, num_transforms
        Width (default ``4 * n_latent``, at least 16) and number of the IAF layers.

    Returns
    -------
    LocalPosterior
    """
    if kind not in LOCAL_KINDS:
        raise ConfigError(f"local posterior kind must be one of {', '.join(LOCAL_KINDS)}")
    if steps < 1:
        raise ConfigError(f"steps must be at least 1, got {steps}")
    model = fixed_decoder_model(vae)
    with frozen(vae), pyro.get_param_store().scope():
        loc, scale, losses = _fit_normal(model, vae, x, steps, lr, particles)
        if kind == "normal":
            posterior: torch.distributions.Distribution = dist.Normal(loc, scale).to_event(1)
            return LocalPosterior(posterior=posterior, kind=kind, losses=losses)
        hidden = [hidden_dim or max(16, 4 * vae.n_latent)]
        parts: list[torch.distributions.Distribution] = []
        flow_losses: list[float] = []
        for i in range(x.shape[0]):

            def init_transform(dim: int, i: int = i) -> T.ComposeTransformModule:
                # On the VAE's device: the autoguide is never moved, and takes the
                # device of its base distribution from these layers' parameters.
                layers: list[TransformModule] = []
                for j in range(num_transforms):
                    if j:
                        reverse = torch.arange(dim - 1, -1, -1, device=loc.device)
                        layers.append(T.permute(dim, reverse))
                    layers.append(T.affine_autoregressive(dim, hidden).to(loc.device))
                return T.ComposeTransformModule([*layers, _Affine(loc[i], scale[i])])

            guide = AutoNormalizingFlow(model, init_transform)
            point_losses = _optimize(model, guide, x[i : i + 1], steps, lr, particles)
            if flow_losses:
                flow_losses = [a + b for a, b in zip(flow_losses, point_losses, strict=True)]
            else:
                flow_losses = point_losses
            for p in guide.parameters():
                p.requires_grad_(False)
            parts.append(guide.get_posterior())  # over the (n_latent,) vector of one point
    return LocalPosterior(posterior=StackedPosterior(parts), kind=kind, losses=losses + flow_losses)
