"""Evaluation of a trained VAE: importance-sampled log-likelihood and friends.

The marginal likelihood is estimated by importance sampling with the guide
as proposal (Burda, Grosse & Salakhutdinov 2016, "Importance Weighted
Autoencoders"):

    log p(x) ~= log (1/K) sum_k p(x, z_k) / q(z_k|x),   z_k ~ q(z|x),

a stochastic lower bound that tightens to log p(x) as K grows. Everything is
computed from the distributions ``vae.qz(x)``, ``vae.prior()`` and
``vae.px(z)``, so it holds for every registered guide, prior and likelihood.

Every Monte Carlo figure comes with two standard errors:

- ``*_stderr``, over images: the spread of the per-image values over sqrt(n),
  how far another sample of n images from the same source could move the
  mean (the Monte Carlo noise is part of that spread);
- ``*_mc_stderr``, Monte Carlo: how far another evaluation of these same
  images with other draws could move it (the error of the estimator itself;
  zero for what is computed in closed form).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch.distributions import Distribution, kl_divergence
from torch.overrides import TorchFunctionMode

from pyrovae.data import to_unit_float
from pyrovae.errors import ConfigError
from pyrovae.files import atomic_write_text, check_output_file
from pyrovae.model import VAE

#: Default budget of decoded pixels held at once (samples x data points x pixels):
#: 2^24 float32 values, 64 MiB per tensor of that size.
DEFAULT_ELEMENT_BUDGET = 1 << 24

#: What :func:`evaluate` can compute, by ``--metrics`` name.
METRICS: tuple[str, ...] = ("logpx", "elbo", "active", "surgery", "gaps")
#: Computed unless asked otherwise: all but the per-image optimization of the gaps.
DEFAULT_METRICS: tuple[str, ...] = ("logpx", "elbo", "active", "surgery")
#: Importance samples per image for log p(x) by default: with 1000 images a minute on
#: two CPU cores for the README's Fashion-MNIST runs (-k 5000 for published figures).
DEFAULT_K = 500
#: Images evaluated by default (the first ones of the split): a mean over 1000
#: images is known to about a tenth of the per-image spread.
DEFAULT_N = 1000
#: Images for the inference gaps when ``gaps`` is asked for without a number.
DEFAULT_GAP_POINTS = 8

T = TypeVar("T")


def _model_device(vae: VAE) -> torch.device:
    return next(vae.parameters()).device


def progress_bar(
    iterable: Iterable[T], desc: str, enabled: bool, total: int | None = None, unit: str = "it"
) -> Iterable[T]:
    """``iterable`` with a tqdm bar on stderr when ``enabled`` and stderr is a terminal."""
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(
        iterable, desc=desc, total=total, unit=unit, leave=False, file=sys.stderr, disable=None
    )


def importance_draws(
    vae: VAE,
    x: torch.Tensor,
    n: int,
    proposal: Distribution | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` draws z ~ r(z) per data point and their log importance ratios log p(x, z) - log r(z).

    Parameters
    ----------
    vae
        The model; p(x, z) = ``vae.prior()`` x ``vae.px(z)``.
    x
        A batch of images on the [0, 1] scale, ``(batch, C, H, W)``.
    n
        Draws per data point.
    proposal
        r(z), a distribution with batch shape ``(batch,)`` and event shape
        ``(n_latent,)``; default the guide ``vae.qz(x)``. Passing one (an exact
        posterior, a deliberately bad one) is how the estimators are tested.

    Returns
    -------
    z, log_w
        ``(n, batch, n_latent)`` and ``(n, batch)``.
    """
    r = vae.qz(x) if proposal is None else proposal
    z = r.sample((n,))  # (n, batch, n_latent)
    log_r = r.log_prob(z)  # (n, batch)
    log_joint = vae.prior().log_prob(z) + vae.px(z).log_prob(x)  # (n, batch)
    return z, log_joint - log_r


def log_importance_weights(
    vae: VAE,
    x: torch.Tensor,
    n: int,
    proposal: Distribution | None = None,
) -> torch.Tensor:
    """The log importance ratios ``(n, batch)`` of :func:`importance_draws`."""
    return importance_draws(vae, x, n, proposal)[1]


def auto_chunk_size(vae: VAE, batch_size: int, budget: int = DEFAULT_ELEMENT_BUDGET) -> int:
    """Samples per chunk so that ``chunk x batch_size x pixels`` stays within ``budget``."""
    n_pixels = math.prod(vae.image_shape)
    return max(1, budget // (batch_size * n_pixels))


def _batches(images: torch.Tensor, batch_size: int) -> Iterator[slice]:
    for start in range(0, images.shape[0], batch_size):
        yield slice(start, start + batch_size)


def _check_k(k: int, batch_size: int, chunk_size: int | None) -> None:
    if k < 1:
        raise ConfigError(f"-k must be at least 1, got {k}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    if chunk_size is not None and chunk_size < 1:
        raise ConfigError(f"chunk_size must be at least 1, got {chunk_size}")


@dataclass
class ImportanceEstimate:
    """Importance-sampling estimates per data point, each ``(batch,)`` float64.

    ``log_px`` = log (1/K) sum_k w_k and ``elbo`` = (1/K) sum_k log w_k from the
    same K draws, with ``recon`` = (1/K) sum_k log p(x|z_k) and ``kl`` =
    (1/K) sum_k [log r(z_k) - log p(z_k)] its two terms (the KL sampled: of the
    proposal r, the guide by default). ``*_var`` are Monte Carlo variances: for
    ``log_px`` by the delta method, Var(w) / (K mean(w)^2), which is itself
    unreliable when the weights have a heavy tail (see
    :func:`pyrovae.diagnostics.psis_khat`).
    """

    log_px: torch.Tensor
    elbo: torch.Tensor
    log_px_var: torch.Tensor
    elbo_var: torch.Tensor
    recon: torch.Tensor
    recon_var: torch.Tensor
    kl: torch.Tensor
    kl_var: torch.Tensor

    @staticmethod
    def cat(parts: Sequence[ImportanceEstimate]) -> ImportanceEstimate:
        names = [f.name for f in fields(ImportanceEstimate)]
        return ImportanceEstimate(**{n: torch.cat([getattr(p, n) for p in parts]) for n in names})


class _ChunkMoments:
    """Running mean and sum of squared deviations over draws that come in chunks
    ``(chunk, batch)``, merged as Chan, Golub & LeVeque (1979) do, in float64."""

    def __init__(self, shape: tuple[int, ...], device: torch.device) -> None:
        self.count = 0
        self.mean = torch.zeros(shape, dtype=torch.float64, device=device)
        self.m2 = torch.zeros_like(self.mean)

    def add(self, values: torch.Tensor) -> None:
        values = values.double()
        n_chunk = values.shape[0]
        chunk_mean = values.mean(0)
        delta = chunk_mean - self.mean
        total = self.count + n_chunk
        self.mean = self.mean + delta * n_chunk / total
        chunk_m2 = ((values - chunk_mean) ** 2).sum(0)
        self.m2 = self.m2 + chunk_m2 + delta**2 * self.count * n_chunk / total
        self.count = total

    def var_of_mean(self) -> torch.Tensor:
        if self.count < 2:
            return torch.full_like(self.mean, math.nan)
        return self.m2 / (self.count - 1) / self.count


@torch.no_grad()
def importance_batch(
    vae: VAE,
    x: torch.Tensor,
    k: int,
    chunk_size: int,
    proposal: Distribution | None = None,
) -> ImportanceEstimate:
    """IS log p(x), the Monte Carlo ELBO and its terms for one batch, from the same ``k``
    draws.

    Draws come ``chunk_size`` at a time; log-sum-exps of w and w^2 and the
    moments of the log terms are accumulated in float64, so memory does not
    grow with ``k``.
    """
    r = vae.qz(x) if proposal is None else proposal
    shape = (x.shape[0],)
    lse = torch.full(shape, -math.inf, dtype=torch.float64, device=x.device)
    lse2 = lse.clone()
    moments = {name: _ChunkMoments(shape, x.device) for name in ("log_w", "recon", "kl")}
    for start in range(0, k, chunk_size):
        z = r.sample((min(chunk_size, k - start),))  # (chunk, batch, n_latent)
        log_r = r.log_prob(z).double()  # (chunk, batch)
        recon = vae.px(z).log_prob(x).double()
        kl = log_r - vae.prior().log_prob(z).double()
        log_w = recon - kl
        lse = torch.logaddexp(lse, torch.logsumexp(log_w, dim=0))
        lse2 = torch.logaddexp(lse2, torch.logsumexp(2 * log_w, dim=0))
        for name, values in (("log_w", log_w), ("recon", recon), ("kl", kl)):
            moments[name].add(values)
    if k > 1:
        # Var(w) / (K mean(w)^2) = (K sum w^2 / (sum w)^2 - 1) / (K - 1).
        log_px_var = (torch.exp(math.log(k) + lse2 - 2 * lse) - 1).clamp(min=0) / (k - 1)
    else:
        log_px_var = torch.full(shape, math.nan, dtype=torch.float64, device=x.device)
    return ImportanceEstimate(
        log_px=lse - math.log(k),
        elbo=moments["log_w"].mean,
        log_px_var=log_px_var,
        elbo_var=moments["log_w"].var_of_mean(),
        recon=moments["recon"].mean,
        recon_var=moments["recon"].var_of_mean(),
        kl=moments["kl"].mean,
        kl_var=moments["kl"].var_of_mean(),
    )


@torch.no_grad()
def importance_log_marginal(
    vae: VAE,
    images: torch.Tensor,
    k: int = 5000,
    *,
    chunk_size: int | None = None,
    batch_size: int = 100,
    progress: bool = False,
) -> torch.Tensor:
    """Importance-sampled log p(x) per data point, with q(z|x) as proposal.

    The K samples of each data point are drawn in chunks of ``chunk_size`` and
    folded into a running log-sum-exp, so peak memory depends on
    ``chunk_size x batch_size`` and not on K. Runs on the VAE's device.

    Parameters
    ----------
    vae
        A trained VAE (its ``beta`` is ignored: this is the plain model).
    images
        Images in the data set's stored form (``uint8`` or float in [0, 1]),
        ``(N, C, H, W)``. For a binary likelihood they must already be binary
        (the run's prepared test set is).
    k
        Importance samples per data point.
    chunk_size
        Samples drawn at once per batch; default :func:`auto_chunk_size`.
    batch_size
        Data points processed together.
    progress
        Show a progress bar over batches.

    Returns
    -------
    torch.Tensor
        ``(N,)`` float64 estimates of log p(x) in nats, on the VAE's device.

    Example
    -------
    >>> run = pyrovae.load_run()
    >>> log_px = importance_log_marginal(run.vae, run.data().test, k=1000)
    >>> log_px.mean(), log_px.std() / len(log_px) ** 0.5  # doctest: +SKIP
    """
    return _importance_all(vae, images, k, chunk_size, batch_size, progress).log_px


def _importance_all(
    vae: VAE,
    images: torch.Tensor,
    k: int,
    chunk_size: int | None,
    batch_size: int,
    progress: bool,
    desc: str = "log p(x)",
) -> ImportanceEstimate:
    _check_k(k, batch_size, chunk_size)
    chunk = min(k, chunk_size or auto_chunk_size(vae, batch_size))
    device = _model_device(vae)
    batches = list(_batches(images, batch_size))
    parts = []
    with _eval_mode(vae):
        for index in progress_bar(batches, f"{desc}, K={k}", progress, unit="batch"):
            x = to_unit_float(images[index].to(device))  # (batch, C, H, W)
            parts.append(importance_batch(vae, x, k, chunk))
    return ImportanceEstimate.cat(parts)


@contextmanager
def restored_rng(device: str, active: bool = True) -> Iterator[None]:
    """Run the block, then put torch's RNGs back as they were (a seeded run must not
    reseed its caller's RNG); ``device`` as ``--device``, whose RNG is restored too."""
    from pyrovae.training import resolve_device

    if not active:
        yield
        return
    cuda = resolve_device(device).type == "cuda"
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count())) if cuda else []):
        yield


@contextmanager
def _eval_mode(vae: VAE) -> Iterator[None]:
    was_training = vae.training
    vae.eval()
    try:
        yield
    finally:
        vae.train(was_training)


def _stderr(values: torch.Tensor) -> float:
    """Standard error of the mean of ``values`` over its entries (NaN for one)."""
    return float(values.std() / math.sqrt(values.numel())) if values.numel() > 1 else math.nan


def _mc_stderr(variances: torch.Tensor) -> float:
    """Monte Carlo standard error of a mean of independent estimates with ``variances``."""
    return float(variances.sum().sqrt() / variances.numel())


# --------------------------------------------------------------------------- #
# Bits per dimension
# --------------------------------------------------------------------------- #

#: log 256: the log-Jacobian per pixel of the map [0, 256) -> [0, 1) of 8-bit values.
_LOG_256 = math.log(256.0)


@dataclass
class BitsPerDim:
    """-log2 p(x) / D: a code length in bits per pixel value, or ``None`` with the reason.

    ``note`` says how it was obtained or why it is withheld.
    """

    value: float | None
    stderr: float | None
    mc_stderr: float | None
    note: str


def bits_per_dim(
    vae: VAE,
    images: torch.Tensor,
    log_px: ImportanceEstimate,
    k: int,
    *,
    batch_size: int = 100,
    chunk_size: int | None = None,
    progress: bool = False,
) -> BitsPerDim:
    """Bits per dimension of ``images``, as a code length for their stored values.

    - Discrete likelihoods (``Likelihood.discrete``: Bernoulli) give a
      probability mass, and -log2 p(x) / D is already a code length: it is read
      off ``log_px``.
    - Continuous likelihoods (Gaussian, continuous Bernoulli) give a density on
      the [0, 1] scale, which is no code length. For 8-bit images (``uint8``)
      uniform dequantization makes one (Theis, van den Oord & Bethge 2016): the
      density is estimated, by importance sampling with the same ``k``, at
      y = (x + u) / 256 with u ~ U[0, 1)^D, and -log p(x) <= -log p(y) + D log 256
      nats, the last term the Jacobian of the map [0, 256) -> [0, 1). This is the
      figure published bits/dim on 8-bit data are.
    - Continuous likelihoods on data that are not 8-bit (float pixels, such as
      the bundled digits): withheld, as there is no code length to give.
    """
    n_dims = math.prod(vae.image_shape)
    scale = n_dims * math.log(2)
    if vae.likelihood.discrete:
        estimate = log_px
        offset, note = 0.0, "code length of the likelihood's probability mass"
    elif images.dtype == torch.uint8:
        noise = torch.rand(images.shape, device=images.device)
        dequantized = (images.float() + noise) / 256.0  # (N, C, H, W) in [0, 1)
        estimate = _importance_all(
            vae, dequantized, k, chunk_size, batch_size, progress, "dequantized log p(x)"
        )
        offset = n_dims * _LOG_256
        note = "8-bit data, uniform dequantization: -log p((x+u)/256) + D log 256"
    else:
        reason = (
            "withheld: a continuous likelihood on data that are not 8-bit (uint8) gives a "
            "density, not a code length"
        )
        return BitsPerDim(None, None, None, reason)
    bits = (offset - estimate.log_px) / scale
    return BitsPerDim(
        value=float(bits.mean()),
        stderr=_stderr(bits),
        mc_stderr=_mc_stderr(estimate.log_px_var) / scale,
        note=note,
    )


# --------------------------------------------------------------------------- #
# Latent usage: active units and ELBO surgery
# --------------------------------------------------------------------------- #

#: Burda et al. (2016) call unit u active when Cov_x(E_q[z_u|x]) exceeds this.
ACTIVE_UNIT_THRESHOLD = 0.01
#: Draws of q(z|x) per image for E_q[z|x] when the guide has no closed-form mean.
#: Their noise, Var_q[z_u] / n, is subtracted from Cov_x, so a few suffice.
MEAN_DRAWS = 100


def posterior_mean(qz: Distribution, n: int = 64) -> torch.Tensor:
    """E_q[z]: the closed form when the distribution has one, else a mean of ``n`` draws."""
    return _posterior_mean_and_noise(qz, n)[0]


def _posterior_mean_and_noise(qz: Distribution, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """E_q[z] as :func:`posterior_mean`, and the Monte Carlo variance of that estimate
    (Var_q[z] / n; zero for the closed form), both ``(batch, n_latent)``."""
    try:
        mean = qz.mean
        return mean, torch.zeros_like(mean)
    except NotImplementedError:
        draws = qz.sample((n,))  # (n, batch, n_latent)
        return draws.mean(0), draws.var(0) / n


@torch.no_grad()
def unit_variances(
    vae: VAE, images: torch.Tensor, batch_size: int = 100, progress: bool = False
) -> torch.Tensor:
    """Cov_x(E_q[z_u|x]) of each latent unit over ``images``, ``(n_latent,)`` float64."""
    device = _model_device(vae)
    means, noise = [], []
    with _eval_mode(vae):
        for index in progress_bar(
            list(_batches(images, batch_size)), "active units", progress, unit="batch"
        ):
            x = to_unit_float(images[index].to(device))
            mean, mean_noise = _posterior_mean_and_noise(vae.qz(x), MEAN_DRAWS)
            means.append(mean.double())  # (batch, n_latent)
            noise.append(mean_noise.double())  # (batch, n_latent)
    # Sampled means (flow guides) spread by Var_q[z_u] / n even for a unit that
    # ignores x; subtracting that noise keeps collapsed units below the threshold.
    return (torch.cat(means).var(dim=0) - torch.cat(noise).mean(0)).clamp(min=0)


#: Default budget of ELBO surgery: floating-point operations (matrix products)
#: spent on densities log q(z_s|x_m), about 5 s of CPU time (an IAF guide of 50
#: units on Fashion-MNIST: 60 images x 60 draws; a Gaussian guide costs nothing).
SURGERY_FLOPS = 5e10
#: Most images whose aggregate posterior surgery takes, and most draws of it.
SURGERY_MAX_POINTS = 2000
SURGERY_MAX_DRAWS = 1000
#: Fewest images and draws surgery takes whatever the budget.
SURGERY_MIN = 50
#: (draw, image) pairs whose density is evaluated in one call.
_PAIR_CHUNK = 1 << 15


@dataclass
class SurgeryResult:
    """ELBO surgery (Hoffman & Johnson 2016), nats per data point, each with its
    Monte Carlo standard error.

    Over the ``points`` images of the evaluation set that surgery takes (all of
    them when the budget allows), with q(z) = (1/M) sum_m q(z|x_m) their
    aggregate posterior: ``average_kl`` = E_x KL(q(z|x) || p(z)) =
    ``marginal_kl`` (KL(q(z) || p(z))) + ``mutual_information`` (I(x; z)
    under q), from ``draws`` draws of q(z). I(x; z) is at most
    ``mutual_information_bound`` = log M, and its estimate is too, draw by draw.
    ``kl_analytic``: the average KL is in closed form (no Monte Carlo error).
    """

    average_kl: float
    average_kl_mc_stderr: float
    marginal_kl: float
    marginal_kl_mc_stderr: float
    mutual_information: float
    mutual_information_mc_stderr: float
    mutual_information_bound: float
    points: int
    draws: int
    kl_analytic: bool


def _pair_log_q(qz: Distribution, z: torch.Tensor) -> torch.Tensor:
    """log q(z_s|x_m) for codes ``(S, L)`` under ``qz`` with batch ``(M,)``: ``(S, M)``."""
    # Expanded, not broadcast: conditional flows expand their context to z's shape.
    return qz.log_prob(z[:, None, :].expand(-1, qz.batch_shape[0], -1))


class _MatmulFlops(TorchFunctionMode):
    """Counts the floating-point operations of the matrix products run inside it.

    A light stand-in for torch's FlopCounterMode, whose first use imports the
    compiler stack (seconds): networks are linear layers and matrix products.
    """

    _PRODUCTS = frozenset(
        {
            torch.matmul,
            torch.mm,
            torch.bmm,
            torch.addmm,
            torch.Tensor.matmul,
            torch.Tensor.__matmul__,
        }
    )

    def __init__(self) -> None:
        super().__init__()
        self.flops = 0.0

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        if func is torch.nn.functional.linear:
            x, weight = args[0], args[1]
            self.flops += 2.0 * (x.numel() // max(x.shape[-1], 1)) * weight.numel()
        elif func in self._PRODUCTS and isinstance(out, torch.Tensor):
            inner = args[-1].shape[-2] if args[-1].dim() > 1 else args[-1].shape[-1]
            self.flops += 2.0 * out.numel() * inner
        return out


@torch.no_grad()
def surgery_pair_flops(vae: VAE, images: torch.Tensor) -> float:
    """Floating-point operations of one density log q(z|x_m) at a code z drawn for
    another image, counted (matrix products) on a few pairs.

    Deterministic and machine-independent, it sizes ELBO surgery to a budget: a
    Gaussian guide's density costs next to nothing, a flow's needs its inverse
    (for an IAF, one network pass per latent unit and layer).
    """
    m = min(4, images.shape[0])
    x = to_unit_float(images[:m].to(_model_device(vae)))
    qz = vae.qz(x)
    z = qz.sample()  # (m, L)
    with _MatmulFlops() as counter:
        _pair_log_q(qz, z)  # the encoder's cost is per image, not per pair: not counted
    return counter.flops / (m * m)


def surgery_size(
    n: int,
    pair_flops: float,
    budget: float = SURGERY_FLOPS,
    points: int | None = None,
    draws: int | None = None,
) -> tuple[int, int]:
    """Images M and draws S of ELBO surgery: as many as ``budget`` flops pay for
    (M S pairs), split evenly, within the caps; ``points`` and ``draws`` override."""
    pairs = budget / pair_flops if pair_flops > 0 else math.inf
    side = int(math.sqrt(pairs)) if math.isfinite(pairs) else SURGERY_MAX_POINTS
    m = points or min(n, SURGERY_MAX_POINTS, max(SURGERY_MIN, side))
    s_budget = int(pairs // m) if math.isfinite(pairs) else SURGERY_MAX_DRAWS
    s = draws or min(SURGERY_MAX_DRAWS, max(SURGERY_MIN, s_budget))
    return min(m, n), s


@torch.no_grad()
def elbo_surgery(
    vae: VAE,
    images: torch.Tensor,
    *,
    points: int | None = None,
    draws: int | None = None,
    budget: float = SURGERY_FLOPS,
    kl_draws: tuple[torch.Tensor, torch.Tensor] | None = None,
    batch_size: int = 500,
    progress: bool = False,
) -> SurgeryResult:
    """Split the average KL into KL(q(z) || p(z)) and the mutual information I(x; z).

    From S draws z_s ~ q(z), each from the guide of an image n_s (images in
    turn, in random order) and the densities log q(z_s|x_m) under every image's
    guide, with log q(z_s) = logsumexp_m log q(z_s|x_m) - log M:

    - I(x; z) ~ mean_s [log q(z_s|x_{n_s}) - log q(z_s)], each term at most log M
      (q(z_s) >= q(z_s|x_{n_s}) / M), so the estimate respects its bound;
    - E_x KL(q(z|x) || p(z)) over the M images: in closed form when torch has
      it; else from ``kl_draws``, per-image sampled KLs of ``images`` and their
      Monte Carlo variances (those of the draws of log p(x), many per image and
      cheap, as a flow scores its own draws without inverting); else
      mean_s [log q(z_s|x_{n_s}) - log p(z_s)] from the same S draws;
    - KL(q(z) || p(z)) = average KL - I(x; z).

    M images (a random subset of ``images`` when not all fit) and S draws are
    sized by :func:`surgery_size` to ``budget`` flops of densities: a flow guide's
    inverse makes each density costly, and all M x S pairs are needed. The
    guide must have a density at any z (true of the Gaussian, IAF and spline
    guides).
    """
    device = _model_device(vae)
    n = images.shape[0]
    m, s = surgery_size(n, surgery_pair_flops(vae, images), budget, points, draws)
    subset = torch.randperm(n)[:m].sort().values if m < n else torch.arange(n)
    xs = images[subset.to(images.device)]
    # Stratified: every image is picked equally often (up to one).
    picks = torch.randperm(m)[torch.arange(s) % m].to(device)  # (S,)
    with _eval_mode(vae):
        z = torch.cat(
            [
                vae.qz(to_unit_float(xs[picks[i : i + batch_size]].to(device))).sample()
                for i in range(0, s, batch_size)
            ]
        )  # (S, L)
        log_q = torch.full((s,), -math.inf, dtype=torch.float64, device=device)
        own = torch.empty(s, dtype=torch.float64, device=device)  # log q(z_s|x_{n_s})
        kl_terms: list[torch.Tensor] | None = []
        step = max(1, _PAIR_CHUNK // batch_size)
        for index in progress_bar(
            list(_batches(xs, batch_size)), f"ELBO surgery, {m} x {s}", progress, unit="batch"
        ):
            qz = vae.qz(to_unit_float(xs[index].to(device)))  # batch (b,)
            if kl_terms is not None:
                try:
                    kl_terms.append(kl_divergence(qz, vae.prior().expand(qz.batch_shape)))
                except NotImplementedError:
                    kl_terms = None
            for start in range(0, s, step):
                chunk = slice(start, start + step)
                lp = _pair_log_q(qz, z[chunk]).double()  # (chunk, b)
                log_q[chunk] = torch.logaddexp(log_q[chunk], torch.logsumexp(lp, dim=1))
                local = picks[chunk] - index.start  # position of n_s in this batch
                mine = (local >= 0) & (local < lp.shape[1])
                rows = torch.nonzero(mine).squeeze(1)
                own[chunk][rows] = lp[rows, local[rows]]
        log_q -= math.log(m)
        # Each term is at most log M (own is one of the M terms of the sum in log_q);
        # the clamps only take back the last bit of round-off above it.
        information = (own - log_q).clamp(max=math.log(m))  # (S,)
        if kl_terms is None and kl_draws is None:
            per_draw = own - vae.prior().log_prob(z).double()
            average_kl, average_kl_se = float(per_draw.mean()), _stderr(per_draw)
            marginal = per_draw - information
            marginal_kl, marginal_se = float(marginal.mean()), _stderr(marginal)
        else:
            if kl_terms is not None:
                average_kl, average_kl_se = float(torch.cat(kl_terms).double().mean()), 0.0
            else:
                assert kl_draws is not None
                rows = subset.to(kl_draws[0].device)
                kl, kl_var = kl_draws[0][rows], kl_draws[1][rows]
                average_kl, average_kl_se = float(kl.mean()), _mc_stderr(kl_var)
            marginal_kl = average_kl - float(information.mean())
            marginal_se = math.hypot(average_kl_se, _stderr(information))
    return SurgeryResult(
        average_kl=average_kl,
        average_kl_mc_stderr=average_kl_se,
        marginal_kl=marginal_kl,
        marginal_kl_mc_stderr=marginal_se,
        mutual_information=min(float(information.mean()), math.log(m)),
        mutual_information_mc_stderr=_stderr(information),
        mutual_information_bound=math.log(m),
        points=m,
        draws=s,
        kl_analytic=kl_terms is not None,
    )


# --------------------------------------------------------------------------- #
# Inference gaps
# --------------------------------------------------------------------------- #


@dataclass
class GapsResult:
    """Inference gaps of Cremer, Li & Duvenaud (2018), means over ``n`` images (nats),
    each with its Monte Carlo standard error.

    log p(x) - ELBO(q) = ``approximation_gap`` (log p(x) - ELBO(q*)) +
    ``amortization_gap`` (ELBO(q*) - ELBO(q)), where q* of family ``kind`` is
    fitted to each image alone with the decoder fixed
    (:func:`pyrovae.local_guides.fit_local_posterior`, ``iterations`` steps in
    all, ``converged`` when every fit stopped on its own). log p(x) is one
    importance-sampling estimate from the defensive mixture of ``proposal``
    (equal weights), ``draws`` draws of each; ELBO(q) and ELBO(q*) are means
    over the draws of their own component. ``per_point`` holds the lists.
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
            joints.append((vae.prior().log_prob(z) + vae.px(z).log_prob(x)).double())
        strata.append(_Stratum(torch.cat(joints), torch.cat(densities, dim=1)))
    return strata


def _mixture_estimates(
    strata: Sequence[_Stratum], local_index: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
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
    return log_px, torch.as_tensor(log_px_var), elbo, elbo_var, cov


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
    ``normal`` for the ``normal`` amortized guide (the gaps are defined within
    the guide's family) and ``iaf`` otherwise. log p(x) is estimated once, by
    importance sampling from the defensive mixture of the amortized q(z|x) (when
    it has a density at any z), q* and, when q* is a diagonal Gaussian (whose
    weights can have infinite variance on a correlated posterior), a fitted
    full-covariance Gaussian; ``k`` draws in all. Its expectation is a lower
    bound on log p(x), unlike the larger of two estimates.
    """
    from pyrovae.local_guides import CORRELATED_KINDS, fit_local_posterior

    if kind == "auto":
        kind = "normal" if vae.config.guide == "normal" else "iaf"
    device = _model_device(vae)
    x = to_unit_float(images.to(device))
    fits = [kind] if kind in CORRELATED_KINDS else [kind, "mvn"]
    with _eval_mode(vae):
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
        amortized = vae.qz(x)
        in_mixture = getattr(vae.guide_net, "scores_any_z", True)
        names = (["q"] if in_mixture else []) + [f"q* ({name})" for name in fits]
        components = ([amortized] if in_mixture else []) + [local[f].posterior for f in fits]
        per_component = max(2, k // len(components))
        chunk = min(per_component, chunk_size or auto_chunk_size(vae, x.shape[0]))
        strata = _draw_strata(vae, x, components, per_component, chunk)
        log_px, log_px_var, elbo_local, elbo_local_var, cov = _mixture_estimates(
            strata, names.index(f"q* ({kind})")
        )
        if in_mixture:
            q_ratio = strata[0].log_joint - strata[0].log_r[0]  # (k, B)
        else:
            with torch.no_grad():  # its own draws: a flow without an inverse scores them
                q_ratio = torch.cat(
                    [
                        log_importance_weights(vae, x, min(chunk, per_component - i))
                        for i in range(0, per_component, chunk)
                    ]
                ).double()
        elbo_q, elbo_q_var = q_ratio.mean(0), q_ratio.var(0) / q_ratio.shape[0]
    approximation = log_px - elbo_local
    amortization = elbo_local - elbo_q
    return GapsResult(
        n=x.shape[0],
        kind=kind,
        proposal=names,
        draws=per_component,
        iterations=sum(f.iterations for f in local.values()),
        converged=all(f.converged for f in local.values()),
        log_px=float(log_px.mean()),
        log_px_mc_stderr=_mc_stderr(log_px_var),
        elbo_amortized=float(elbo_q.mean()),
        elbo_amortized_mc_stderr=_mc_stderr(elbo_q_var),
        elbo_local=float(elbo_local.mean()),
        elbo_local_mc_stderr=_mc_stderr(elbo_local_var),
        approximation_gap=float(approximation.mean()),
        approximation_gap_mc_stderr=_mc_stderr(log_px_var + elbo_local_var - 2 * cov),
        amortization_gap=float(amortization.mean()),
        amortization_gap_mc_stderr=_mc_stderr(elbo_local_var + elbo_q_var),
        per_point={
            "log_px": log_px.tolist(),
            "elbo_amortized": elbo_q.tolist(),
            "elbo_local": elbo_local.tolist(),
            "approximation_gap": approximation.tolist(),
            "amortization_gap": amortization.tolist(),
        },
    )


# --------------------------------------------------------------------------- #
# The whole evaluation
# --------------------------------------------------------------------------- #


@dataclass
class EvaluationResult:
    """Figures of :func:`evaluate`, per data point in nats unless named otherwise.

    Figures of a metric not in ``metrics`` are ``None``. Each Monte Carlo figure
    ``f`` has ``f_stderr`` (over images) and ``f_mc_stderr`` (Monte Carlo), see
    the module docstring.

    - ``logpx``: ``log_px``, the importance-sampled log p(x) with ``k`` samples
      per image; ``elbo_k``, the mean of the same ``k`` log-ratios; bits per
      dimension (:func:`bits_per_dim`; ``None`` with ``bits_per_dim_note``
      saying why when it is no code length).
    - ``elbo``: ``elbo`` = ``recon`` - ``kl``, each image's terms averaged over
      ``elbo_draws`` draws of z (those of ``logpx`` when it is computed too), the
      KL in closed form where torch has it. With ``logpx`` too,
      ``log_px_minus_elbo`` (its Monte Carlo standard error ignores the two
      estimates' positive correlation: an upper bound).
    - ``active``: ``unit_variances`` = Cov_x(E_q[z_u|x]) and ``active_units``,
      the number above :data:`ACTIVE_UNIT_THRESHOLD`.
    - ``surgery`` (:class:`SurgeryResult`) and ``gaps`` (:class:`GapsResult`).
    """

    split: str
    n: int
    k: int
    n_dims: int
    n_latent: int
    metrics: list[str]
    log_px: float | None = None
    log_px_stderr: float | None = None
    log_px_mc_stderr: float | None = None
    elbo_k: float | None = None
    elbo_k_stderr: float | None = None
    elbo_k_mc_stderr: float | None = None
    bits_per_dim: float | None = None
    bits_per_dim_stderr: float | None = None
    bits_per_dim_mc_stderr: float | None = None
    bits_per_dim_note: str | None = None
    elbo: float | None = None
    elbo_stderr: float | None = None
    elbo_mc_stderr: float | None = None
    recon: float | None = None
    recon_stderr: float | None = None
    recon_mc_stderr: float | None = None
    kl: float | None = None
    kl_stderr: float | None = None
    kl_mc_stderr: float | None = None
    elbo_draws: int | None = None
    log_px_minus_elbo: float | None = None
    log_px_minus_elbo_stderr: float | None = None
    log_px_minus_elbo_mc_stderr: float | None = None
    active_units: int | None = None
    unit_variances: list[float] | None = None
    surgery: SurgeryResult | None = None
    gaps: GapsResult | None = None
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The figures as plain JSON values (an undefined standard error is ``None``)."""
        return json_safe(asdict(self))

    def _estimate_rows(self) -> list[tuple[str, float | None, float | None, float | None]]:
        rows: list[tuple[str, float | None, float | None, float | None]] = []
        if self.log_px is not None:
            rows.append((f"log p(x) (IS, K={self.k})", *self._triple("log_px")))
            if self.elbo is None:
                rows.append((f"ELBO (mean of the K={self.k} log-ratios)", *self._triple("elbo_k")))
        if self.elbo is not None:
            rows += [
                (f"ELBO ({self.elbo_draws} draws of z per image)", *self._triple("elbo")),
                ("  reconstruction E_q[log p(x|z)]", *self._triple("recon")),
                ("  KL(q(z|x) || p(z))", *self._triple("kl")),
            ]
        if self.log_px_minus_elbo is not None:
            rows.append(("log p(x) - ELBO", *self._triple("log_px_minus_elbo")))
        if self.bits_per_dim is not None:
            rows.append(("bits per dimension", *self._triple("bits_per_dim")))
        if self.surgery is not None:
            s = self.surgery
            rows += [
                (f"ELBO surgery over {s.points} images, {s.draws} draws of q(z)", None, None, None),
                ("  average KL", s.average_kl, None, s.average_kl_mc_stderr),
                ("  KL(q(z) || p(z)) (marginal)", s.marginal_kl, None, s.marginal_kl_mc_stderr),
                (
                    "  I(x; z) (mutual information)",
                    s.mutual_information,
                    None,
                    s.mutual_information_mc_stderr,
                ),
                ("  I(x; z) upper bound log M", s.mutual_information_bound, None, None),
            ]
        if self.gaps is not None:
            g = self.gaps
            fit = f"{g.iterations} steps" + ("" if g.converged else ", NOT converged")
            rows += [
                (f"gaps over {g.n} images (q* = {g.kind}, {fit})", None, None, None),
                ("  log p(x) (IS, mixture of q and q*)", g.log_px, None, g.log_px_mc_stderr),
                ("  ELBO(q*) per-image optimized", g.elbo_local, None, g.elbo_local_mc_stderr),
                ("  ELBO(q) amortized", g.elbo_amortized, None, g.elbo_amortized_mc_stderr),
                (
                    "  approximation gap",
                    g.approximation_gap,
                    None,
                    g.approximation_gap_mc_stderr,
                ),
                ("  amortization gap", g.amortization_gap, None, g.amortization_gap_mc_stderr),
            ]
        return rows

    def _triple(self, name: str) -> tuple[float | None, float | None, float | None]:
        return (
            getattr(self, name),
            getattr(self, f"{name}_stderr"),
            getattr(self, f"{name}_mc_stderr"),
        )

    def format_table(self) -> str:
        """A plain-text table for the terminal: value, standard error over images, and
        Monte Carlo standard error."""

        def cell(value: float | None, digits: int = 3) -> str:
            return "" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"

        rows = self._estimate_rows()
        width = max([len(name) for name, *_ in rows] + [26])
        title = f"{self.split} set: {self.n} images, {self.n_dims} dims, {self.seconds:.1f} s"
        lines = [title, f"{'':<{width}}  {'value':>10}  {'± images':>9}  {'± MC':>8}"]
        lines.append("-" * (width + 35))
        for name, value, stderr, mc in rows:
            digits = 4 if name.startswith("bits") else 3
            lines.append(
                f"{name:<{width}}  {cell(value, digits):>10}  {cell(stderr, digits):>9}"
                f"  {cell(mc, digits):>8}".rstrip()
            )
        if self.bits_per_dim is None and self.bits_per_dim_note:
            lines.append(f"bits per dimension {self.bits_per_dim_note}")
        elif self.bits_per_dim_note:
            lines.append(f"bits per dimension: {self.bits_per_dim_note}")
        if self.active_units is not None:
            active = f"{self.active_units} / {self.n_latent}"
            lines.append(f"{'active units (Cov > 0.01)':<{width}}  {active:>10}")
        lines += [f"warning: {text}" for text in self.warnings]
        return "\n".join(lines)


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float replaced by ``None`` (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value


def parse_metrics(metrics: str | Sequence[str]) -> list[str]:
    """``"logpx,elbo"`` or a sequence -> the list of metric names, checked."""
    names = metrics.split(",") if isinstance(metrics, str) else list(metrics)
    names = [name.strip() for name in names if name.strip()]
    unknown = [name for name in names if name not in METRICS]
    if unknown or not names:
        raise ConfigError(
            f"--metrics takes a comma-separated list of {', '.join(METRICS)}; "
            f"got {','.join(names) or 'nothing'}"
        )
    return [name for name in METRICS if name in names]


def evaluate(
    vae: VAE,
    images: torch.Tensor,
    k: int = DEFAULT_K,
    *,
    split: str = "test",
    metrics: str | Sequence[str] = DEFAULT_METRICS,
    gaps: int = 0,
    gap_kind: str = "auto",
    gap_steps: int = 5000,
    surgery_points: int | None = None,
    surgery_draws: int | None = None,
    surgery_budget: float = SURGERY_FLOPS,
    batch_size: int = 100,
    chunk_size: int | None = None,
    progress: bool = False,
) -> EvaluationResult:
    """Log-likelihood, ELBO terms, bits/dim, active units, ELBO surgery and gaps.

    Parameters
    ----------
    vae
        A trained VAE.
    images
        ``(N, C, H, W)`` in the stored form, binary for a binary likelihood.
    k
        Importance samples per image for log p(x) (and for the gaps).
    metrics
        What to compute, from :data:`METRICS` (a list or a comma-separated string).
    gaps
        Images (the first ones) for the inference gaps; > 0 adds ``gaps`` to
        ``metrics``, and ``gaps`` in ``metrics`` with 0 here takes
        :data:`DEFAULT_GAP_POINTS`.
    gap_kind, gap_steps
        Family of the per-image q* and the most steps of each of its fits (see
        :func:`inference_gaps`).
    surgery_points, surgery_draws, surgery_budget
        Size of ELBO surgery (see :func:`elbo_surgery`).
    progress
        Progress bars on stderr for the steps that take long.

    Returns
    -------
    EvaluationResult
    """
    chosen = parse_metrics(metrics)
    if gaps < 0:
        raise ConfigError(f"--gaps must be >= 0, got {gaps}")
    if gaps and "gaps" not in chosen:
        chosen.append("gaps")
    if images.shape[0] < 2:
        raise ConfigError("evaluation needs at least two images")
    started = time.perf_counter()
    result = EvaluationResult(
        split=split,
        n=images.shape[0],
        k=k,
        n_dims=math.prod(vae.image_shape),
        n_latent=vae.n_latent,
        metrics=chosen,
    )
    draws = None
    if "logpx" in chosen:
        draws = _add_log_px(result, vae, images, k, batch_size, chunk_size, progress)
    if "elbo" in chosen:
        _add_elbo(result, vae, images, draws, batch_size, progress)
    if "active" in chosen:
        _add_active_units(result, vae, images, batch_size, progress)
    if "surgery" in chosen:
        if getattr(vae.guide_net, "scores_any_z", True):
            result.surgery = elbo_surgery(
                vae,
                images,
                points=surgery_points,
                draws=surgery_draws,
                budget=surgery_budget,
                kl_draws=None if draws is None else (draws.kl, draws.kl_var),
                progress=progress,
            )
        else:
            result.warnings.append(
                f"ELBO surgery skipped: the {vae.config.guide} guide has no density at codes it "
                "did not draw itself (no closed-form inverse), which the aggregate posterior needs"
            )
    if "gaps" in chosen:
        points = gaps or DEFAULT_GAP_POINTS
        result.gaps = inference_gaps(
            vae,
            images[:points],
            k,
            kind=gap_kind,
            max_steps=gap_steps,
            chunk_size=chunk_size,
            progress=progress,
        )
        if not result.gaps.converged:
            result.warnings.append(
                f"q* of the gaps did not converge within its step limit ({result.gaps.iterations} "
                "steps): the approximation gap is overstated, the amortization gap understated"
            )
    if _model_device(vae).type == "cuda":
        torch.cuda.synchronize()
    result.seconds = time.perf_counter() - started
    return result


def _add_log_px(
    result: EvaluationResult,
    vae: VAE,
    images: torch.Tensor,
    k: int,
    batch_size: int,
    chunk_size: int | None,
    progress: bool,
) -> ImportanceEstimate:
    estimate = _importance_all(vae, images, k, chunk_size, batch_size, progress)
    result.log_px = float(estimate.log_px.mean())
    result.log_px_stderr = _stderr(estimate.log_px)
    result.log_px_mc_stderr = _mc_stderr(estimate.log_px_var)
    result.elbo_k = float(estimate.elbo.mean())
    result.elbo_k_stderr = _stderr(estimate.elbo)
    result.elbo_k_mc_stderr = _mc_stderr(estimate.elbo_var)
    bits = bits_per_dim(
        vae, images, estimate, k, batch_size=batch_size, chunk_size=chunk_size, progress=progress
    )
    result.bits_per_dim, result.bits_per_dim_note = bits.value, bits.note
    result.bits_per_dim_stderr, result.bits_per_dim_mc_stderr = bits.stderr, bits.mc_stderr
    return estimate


def _add_elbo(
    result: EvaluationResult,
    vae: VAE,
    images: torch.Tensor,
    draws: ImportanceEstimate | None,
    batch_size: int,
    progress: bool,
) -> None:
    """ELBO, reconstruction and KL: from the K draws of log p(x) when there are some
    (the KL in closed form where torch has it), else averaged over fresh draws."""
    from pyrovae.objectives import average_elbo_terms

    if draws is None:
        with _eval_mode(vae):
            terms = average_elbo_terms(
                vae.model, vae.guide, images.to(_model_device(vae)), progress=progress
            )
        recon, recon_var, kl, kl_var = terms.recon, terms.recon_var, terms.kl, terms.kl_var
        elbo_var, result.elbo_draws = terms.elbo_var, terms.draws
    else:
        recon, recon_var, result.elbo_draws = draws.recon, draws.recon_var, result.k
        analytic = _analytic_kl(vae, images, batch_size)
        if analytic is None:
            kl, kl_var, elbo_var = draws.kl, draws.kl_var, draws.elbo_var
        else:
            kl, kl_var, elbo_var = analytic, torch.zeros_like(analytic), recon_var
    figures = [("elbo", recon - kl, elbo_var), ("recon", recon, recon_var), ("kl", kl, kl_var)]
    if draws is not None:
        gap_var = draws.log_px_var + elbo_var
        figures.append(("log_px_minus_elbo", draws.log_px - (recon - kl), gap_var))
    for name, values, var in figures:
        setattr(result, name, float(values.mean()))
        setattr(result, f"{name}_stderr", _stderr(values))
        setattr(result, f"{name}_mc_stderr", _mc_stderr(var))


@torch.no_grad()
def _analytic_kl(vae: VAE, images: torch.Tensor, batch_size: int) -> torch.Tensor | None:
    """KL(q(z|x) || p(z)) per image in closed form, ``(N,)`` float64, or ``None``."""
    device = _model_device(vae)
    parts = []
    with _eval_mode(vae):
        for index in _batches(images, batch_size):
            qz = vae.qz(to_unit_float(images[index].to(device)))
            try:
                parts.append(kl_divergence(qz, vae.prior().expand(qz.batch_shape)).double())
            except NotImplementedError:
                return None
    return torch.cat(parts)


def _add_active_units(
    result: EvaluationResult, vae: VAE, images: torch.Tensor, batch_size: int, progress: bool
) -> None:
    variances = unit_variances(vae, images, batch_size, progress)
    n_active = int((variances > ACTIVE_UNIT_THRESHOLD).sum())
    result.active_units, result.unit_variances = n_active, variances.tolist()
    if n_active * 2 < vae.n_latent:
        result.warnings.append(
            f"only {n_active} of {vae.n_latent} latent units are active: most of the latent "
            "space is unused (posterior collapse); try KL warm-up (--kl-warmup) or fewer units"
        )


def evaluate_run(
    run_dir: str | Path | None = None,
    *,
    split: str = "test",
    k: int = DEFAULT_K,
    n: int | None = DEFAULT_N,
    metrics: str | Sequence[str] = DEFAULT_METRICS,
    gaps: int = 0,
    device: str = "auto",
    seed: int | None = 0,
    json_path: str | Path | None = None,
    progress: bool = False,
) -> EvaluationResult:
    """:func:`evaluate` on the first ``n`` images of a trained run's ``split`` (all: ``None``).

    The images are those :func:`pyrovae.training.split_images` prepares (a
    binary likelihood's training split binarized once, with a fixed seed).
    Writes the result as JSON to ``json_path`` when given. ``seed`` seeds the
    draws without changing the caller's RNG state.
    """
    from pyrovae.api import load_run
    from pyrovae.training import split_images

    if split not in ("test", "train"):
        raise ConfigError(f"--split must be test or train, got {split!r}")
    parse_metrics(metrics)  # bad names fail before the run is loaded
    with restored_rng(device, active=seed is not None):
        run = load_run(run_dir, device=device)
        if json_path is not None:
            # Before the evaluation, which can take long, rather than after it.
            check_output_file(json_path)
        images, _ = split_images(run.config, run.data(), split)
        if n is not None:
            images = images[:n]
        if seed is not None:
            torch.manual_seed(seed)
        result = evaluate(
            run.vae, images, k, split=split, metrics=metrics, gaps=gaps, progress=progress
        )
    if json_path is not None:
        text = json.dumps(result.to_dict(), indent=2) + "\n"
        atomic_write_text(json_path, text)
    return result
