"""ELBO surgery (Hoffman & Johnson 2016, "ELBO surgery: yet another way to carve
up the variational evidence lower bound"): the average KL term splits into
KL(q(z) || p(z)) and the mutual information I(x; z) <= log N.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.distributions import Distribution, kl_divergence

from pyrovae.data.pixels import to_unit_float
from pyrovae.inference.importance import MatmulFlops, index_batches
from pyrovae.inference.stats import mc_standard_error, standard_error
from pyrovae.model.vae import VAE
from pyrovae.runtime import eval_mode, module_device, progress_bar

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
    ``average_kl_stderr`` is the average KL's standard error over the M images
    (how far another sample of images could move it); NaN when the KLs are
    sampled with fewer than two draws an image, where ``average_kl_mc_stderr``
    holds the images' spread as well as the draws'. The marginal KL and
    I(x; z) are figures of the M images' aggregate posterior as a whole, not
    means over images, and carry their Monte Carlo error only.
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
    average_kl_stderr: float = math.nan


def _pair_log_q(qz: Distribution, z: torch.Tensor) -> torch.Tensor:
    """log q(z_s|x_m) for codes ``(S, L)`` under ``qz`` with batch ``(M,)``: ``(S, M)``."""
    # Expanded, not broadcast: conditional flows expand their context to z's shape.
    return qz.log_prob(z[:, None, :].expand(-1, qz.batch_shape[0], -1))


@torch.no_grad()
def surgery_pair_flops(vae: VAE, images: torch.Tensor) -> float:
    """Floating-point operations of one density log q(z|x_m) at a code z drawn for
    another image, counted (matrix products) on a few pairs.

    Deterministic and machine-independent, it sizes ELBO surgery to a budget: a
    Gaussian guide's density costs next to nothing, a flow's needs its inverse
    (for an IAF, one network pass per latent unit and layer).
    """
    m = min(4, images.shape[0])
    x = to_unit_float(images[:m].to(module_device(vae)))
    with eval_mode(vae):  # as surgery runs: dropout off, no batch statistics updated
        qz = vae.qz(x)
        z = qz.sample()  # (m, L)
        with MatmulFlops() as counter:
            _pair_log_q(qz, z)  # the encoder's cost is per image, not per pair: not counted
    return counter.count / (m * m)


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
    device = module_device(vae)
    n = images.shape[0]
    m, s = surgery_size(n, surgery_pair_flops(vae, images), budget, points, draws)
    subset = torch.randperm(n)[:m].sort().values if m < n else torch.arange(n)
    xs = images[subset.to(images.device)]
    # Stratified: every image is picked equally often (up to one).
    picks = torch.randperm(m)[torch.arange(s) % m].to(device)  # (S,)
    with eval_mode(vae):
        z = torch.cat(
            [
                vae.qz(
                    to_unit_float(xs[picks[i : i + batch_size].to(xs.device)].to(device))
                ).sample()
                for i in range(0, s, batch_size)
            ]
        )  # (S, L)
        pairs = _pair_densities(vae, xs, z, picks, batch_size, progress)
        # Each term is at most log M (own is one of the M terms of the sum in log_q);
        # the clamps only take back the last bit of round-off above it.
        information = (pairs.own - pairs.log_q).clamp(max=math.log(m))  # (S,)
        per_image: torch.Tensor | None
        if pairs.kl is not None:
            per_image = pairs.kl.double()
            kl = _KlSplit.given(float(per_image.mean()), 0.0, information)
        elif kl_draws is not None:
            rows = subset.to(kl_draws[0].device)
            per_image, kl_var = kl_draws[0][rows], kl_draws[1][rows]
            kl = _KlSplit.given(float(per_image.mean()), mc_standard_error(kl_var), information)
        else:
            per_draw = pairs.own - vae.prior().log_prob(z).double()
            kl = _KlSplit.per_draw(per_draw, information)
            per_image = _spread_over_images(per_draw, picks, m)
    return SurgeryResult(
        average_kl=kl.average,
        average_kl_mc_stderr=kl.average_se,
        marginal_kl=kl.marginal,
        marginal_kl_mc_stderr=kl.marginal_se,
        mutual_information=min(float(information.mean()), math.log(m)),
        mutual_information_mc_stderr=standard_error(information),
        mutual_information_bound=math.log(m),
        points=m,
        draws=s,
        kl_analytic=pairs.kl is not None,
        average_kl_stderr=math.nan if per_image is None else standard_error(per_image.double()),
    )


def _spread_over_images(per_draw: torch.Tensor, picks: torch.Tensor, m: int) -> torch.Tensor | None:
    """Each image's mean over the draws it made (the stratified picks give every image
    S/M of them, up to one), or ``None`` when some image made fewer than two: one draw
    an image is the per-draw spread again, which the Monte Carlo error already is."""
    counts = torch.zeros(m, dtype=torch.float64, device=per_draw.device).index_add_(
        0, picks, torch.ones_like(per_draw)
    )
    if float(counts.min()) < 2:
        return None
    return torch.zeros_like(counts).index_add_(0, picks, per_draw) / counts


@dataclass
class _PairDensities:
    """Densities of the S draws of q(z) under the guides of the M images."""

    log_q: torch.Tensor  # (S,) log q(z_s) = logsumexp_m log q(z_s|x_m) - log M
    own: torch.Tensor  # (S,) log q(z_s|x_{n_s}), the guide that drew z_s
    kl: torch.Tensor | None  # (M,) KL(q(z|x_m) || p(z)) in closed form, or None


@torch.no_grad()
def _pair_densities(
    vae: VAE,
    xs: torch.Tensor,
    z: torch.Tensor,
    picks: torch.Tensor,
    batch_size: int,
    progress: bool,
) -> _PairDensities:
    """log q(z_s|x_m) for every draw z_s ``(S, L)`` and image x_m of ``xs``, folded into
    log q(z_s) and log q(z_s|x_{n_s}) batch by batch of images (``picks``: n_s)."""
    device, (m, s) = z.device, (xs.shape[0], z.shape[0])
    log_q = torch.full((s,), -math.inf, dtype=torch.float64, device=device)
    own = torch.empty(s, dtype=torch.float64, device=device)
    kl_terms: list[torch.Tensor] | None = []
    step = max(1, _PAIR_CHUNK // batch_size)
    for index in progress_bar(
        list(index_batches(xs, batch_size)), f"ELBO surgery, {m} x {s}", progress, unit="batch"
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
    return _PairDensities(log_q, own, None if kl_terms is None else torch.cat(kl_terms))


@dataclass
class _KlSplit:
    """The average KL and the marginal KL = average KL - I(x; z), with standard errors."""

    average: float
    average_se: float
    marginal: float
    marginal_se: float

    @classmethod
    def given(cls, average: float, average_se: float, information: torch.Tensor) -> _KlSplit:
        """From an average KL estimated apart from the draws of I(x; z) ``(S,)``."""
        marginal = average - float(information.mean())
        return cls(
            average, average_se, marginal, math.hypot(average_se, standard_error(information))
        )

    @classmethod
    def per_draw(cls, per_draw: torch.Tensor, information: torch.Tensor) -> _KlSplit:
        """From log q(z_s|x_{n_s}) - log p(z_s) ``(S,)``, at the draws of I(x; z)."""
        marginal = per_draw - information
        return cls(
            float(per_draw.mean()),
            standard_error(per_draw),
            float(marginal.mean()),
            standard_error(marginal),
        )
