"""Evaluation of a trained VAE: importance-sampled log-likelihood and friends.

The marginal likelihood is estimated by importance sampling with the guide
as proposal (Burda, Grosse & Salakhutdinov 2016, "Importance Weighted
Autoencoders"):

    log p(x) ~= log (1/K) sum_k p(x, z_k) / q(z_k|x),   z_k ~ q(z|x),

a stochastic lower bound that tightens to log p(x) as K grows. Everything is
computed from the distributions ``vae.qz(x)``, ``vae.prior()`` and
``vae.px(z)``, so it holds for every registered guide, prior and likelihood.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.distributions import Distribution

from pyrovae.data import to_unit_float
from pyrovae.errors import ConfigError
from pyrovae.files import atomic_write_text, check_output_file
from pyrovae.model import VAE

#: Default budget of decoded pixels held at once (samples x data points x pixels):
#: 2^24 float32 values, 64 MiB per tensor of that size.
DEFAULT_ELEMENT_BUDGET = 1 << 24


def _model_device(vae: VAE) -> torch.device:
    return next(vae.parameters()).device


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


@torch.no_grad()
def importance_batch(
    vae: VAE,
    x: torch.Tensor,
    k: int,
    chunk_size: int,
    proposal: Distribution | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """IS log p(x) and the Monte Carlo ELBO of one batch, from the same ``k`` draws.

    Draws come ``chunk_size`` at a time; the log-sum-exp and the sum of the
    log ratios are accumulated in float64, so memory does not grow with ``k``.

    Returns
    -------
    log_px, elbo
        Each ``(batch,)`` float64: log (1/k) sum_k w_k and (1/k) sum_k log w_k.
    """
    shape = (x.shape[0],)
    lse = torch.full(shape, -math.inf, dtype=torch.float64, device=x.device)
    total = torch.zeros(shape, dtype=torch.float64, device=x.device)
    for start in range(0, k, chunk_size):
        log_w = log_importance_weights(vae, x, min(chunk_size, k - start), proposal).double()
        lse = torch.logaddexp(lse, torch.logsumexp(log_w, dim=0))
        total += log_w.sum(0)
    return lse - math.log(k), total / k


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
    return _importance_all(vae, images, k, chunk_size, batch_size, progress)[0]


def _importance_all(
    vae: VAE,
    images: torch.Tensor,
    k: int,
    chunk_size: int | None,
    batch_size: int,
    progress: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    _check_k(k, batch_size, chunk_size)
    chunk = min(k, chunk_size or auto_chunk_size(vae, batch_size))
    device = _model_device(vae)
    log_px = torch.empty(images.shape[0], dtype=torch.float64, device=device)
    elbo = torch.empty_like(log_px)
    batches: Iterable[slice] = _batches(images, batch_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(list(batches), desc=f"log p(x), K={k}", unit="batch", leave=False)
    with _eval_mode(vae):
        for index in batches:
            x = to_unit_float(images[index].to(device))  # (batch, C, H, W)
            log_px[index], elbo[index] = importance_batch(vae, x, k, chunk)
    return log_px, elbo


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


# --------------------------------------------------------------------------- #
# Latent usage: active units and ELBO surgery
# --------------------------------------------------------------------------- #

#: Burda et al. (2016) call unit u active when Cov_x(E_q[z_u|x]) exceeds this.
ACTIVE_UNIT_THRESHOLD = 0.01
#: Draws of q(z|x) per image for E_q[z|x] when the guide has no closed-form mean.
MEAN_DRAWS = 1000


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


@dataclass
class SurgeryResult:
    """ELBO surgery (Hoffman & Johnson 2016), nats per data point.

    ``average_kl`` = E_x KL(q(z|x) || p(z)) = ``marginal_kl`` + ``mutual_information``,
    with q(z) = (1/N) sum_n q(z|x_n) the aggregate posterior of the evaluated
    data. ``marginal_kl`` is a Monte Carlo estimate from ``samples`` draws of
    q(z); the mutual information is at most ``mutual_information_bound`` = log N.
    """

    average_kl: float
    marginal_kl: float
    mutual_information: float
    mutual_information_bound: float
    samples: int


@torch.no_grad()
def elbo_surgery(
    vae: VAE,
    images: torch.Tensor,
    average_kl: float,
    *,
    samples: int = 1000,
    batch_size: int = 500,
) -> SurgeryResult:
    """Split ``average_kl`` into KL(q(z) || p(z)) and the mutual information I(x; z).

    KL(q(z) || p(z)) = E_{q(z)}[log q(z) - log p(z)], with z drawn from the
    aggregate posterior (data points in turn, in random order, then z ~ q(z|x)) and
    log q(z) = logsumexp_n log q(z|x_n) - log N over all N images.
    The guide must have a density at any z (true of the Gaussian and flow guides).
    """
    device = _model_device(vae)
    n = images.shape[0]
    with _eval_mode(vae):
        # Stratified: every data point is picked equally often (up to one), which
        # removes the noise of random picks from the estimate.
        picks = torch.randperm(n)[torch.arange(samples) % n]
        z = torch.cat(
            [
                vae.qz(to_unit_float(images[picks[i : i + batch_size]].to(device))).sample()
                for i in range(0, samples, batch_size)
            ]
        )  # (samples, n_latent)
        log_q = torch.full((samples,), -math.inf, dtype=torch.float64, device=device)
        for index in _batches(images, batch_size):
            qz = vae.qz(to_unit_float(images[index].to(device)))  # batch (batch,)
            for s in range(0, samples, batch_size):
                # Expanded, not broadcast: conditional flows expand their context to z's shape.
                zs = z[s : s + batch_size, None, :].expand(-1, qz.batch_shape[0], -1)
                lp = torch.logsumexp(qz.log_prob(zs).double(), dim=1)  # (chunk,)
                log_q[s : s + batch_size] = torch.logaddexp(log_q[s : s + batch_size], lp)
        log_q -= math.log(n)
        marginal_kl = float((log_q - vae.prior().log_prob(z).double()).mean())
    return SurgeryResult(
        average_kl=average_kl,
        marginal_kl=marginal_kl,
        mutual_information=average_kl - marginal_kl,
        mutual_information_bound=math.log(n),
        samples=samples,
    )


# --------------------------------------------------------------------------- #
# Inference gaps
# --------------------------------------------------------------------------- #


@dataclass
class GapsResult:
    """Inference gaps of Cremer, Li & Duvenaud (2018), means over ``n`` points (nats).

    log p(x) - ELBO(q) = ``approximation_gap`` (log p(x) - ELBO(q*)) +
    ``amortization_gap`` (ELBO(q*) - ELBO(q)), where q* is fitted to each
    point alone (:func:`pyrovae.local_guides.fit_local_posterior`, family
    ``kind``) with the decoder fixed; log p(x) is the larger of the IS estimates
    with q and with q* as proposal. ``per_point`` holds the lists.
    """

    n: int
    kind: str
    log_px: float
    elbo_amortized: float
    elbo_local: float
    approximation_gap: float
    amortization_gap: float
    per_point: dict[str, list[float]] = field(default_factory=dict)


def inference_gaps(
    vae: VAE,
    images: torch.Tensor,
    k: int = 5000,
    *,
    kind: str = "auto",
    steps: int = 1000,
    lr: float = 0.05,
    chunk_size: int | None = None,
) -> GapsResult:
    """Approximation and amortization gaps for each image of ``images`` (a few points).

    ``kind`` is the family of q*: ``normal`` or ``iaf``; ``auto`` takes
    ``normal`` for the ``normal`` amortized guide and ``iaf`` otherwise.
    """
    from pyrovae.local_guides import fit_local_posterior

    if kind == "auto":
        kind = "normal" if vae.config.guide == "normal" else "iaf"
    device = _model_device(vae)
    x = to_unit_float(images.to(device))
    chunk = min(k, chunk_size or auto_chunk_size(vae, x.shape[0]))
    with _eval_mode(vae):
        log_px_q, elbo_q = importance_batch(vae, x, k, chunk)
        local = fit_local_posterior(vae, x, kind, steps=steps, lr=lr)  # type: ignore[arg-type]
        log_px_local, elbo_local = importance_batch(vae, x, k, chunk, local.posterior)
    log_px = torch.maximum(log_px_q, log_px_local)
    approximation = log_px - elbo_local
    amortization = elbo_local - elbo_q
    per_point = {
        "log_px": log_px.tolist(),
        "elbo_amortized": elbo_q.tolist(),
        "elbo_local": elbo_local.tolist(),
        "approximation_gap": approximation.tolist(),
        "amortization_gap": amortization.tolist(),
    }
    return GapsResult(
        n=x.shape[0],
        kind=kind,
        log_px=float(log_px.mean()),
        elbo_amortized=float(elbo_q.mean()),
        elbo_local=float(elbo_local.mean()),
        approximation_gap=float(approximation.mean()),
        amortization_gap=float(amortization.mean()),
        per_point=per_point,
    )


# --------------------------------------------------------------------------- #
# The whole evaluation
# --------------------------------------------------------------------------- #


@dataclass
class EvaluationResult:
    """Figures of :func:`evaluate`, per data point in nats unless named otherwise.

    ``log_px`` is the importance-sampled log p(x) with ``k`` samples, and
    ``log_px_stderr`` its standard error over the ``n`` data points. ``elbo``
    = ``recon`` - ``kl`` (one-sample reconstruction term, analytic KL where it
    exists, as the trainer logs it); ``elbo_k`` is the Monte Carlo ELBO from
    the same ``k`` draws as ``log_px``. ``bits_per_dim`` = -log_px / (D ln 2)
    for D = ``n_dims`` pixel values (for continuous likelihoods a density on
    [0, 1], not a code length for 8-bit data). ``unit_variances`` are
    Cov_x(E_q[z_u|x]); ``active_units`` counts those above
    :data:`ACTIVE_UNIT_THRESHOLD`.
    """

    split: str
    n: int
    k: int
    n_dims: int
    log_px: float
    log_px_stderr: float
    elbo: float
    elbo_stderr: float
    elbo_k: float
    recon: float
    kl: float
    bits_per_dim: float
    active_units: int
    n_latent: int
    unit_variances: list[float]
    surgery: SurgeryResult | None
    gaps: GapsResult | None
    seconds: float
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def format_table(self) -> str:
        """A plain-text table for the terminal."""
        rows = [
            (f"log p(x) (IS, K={self.k})", f"{self.log_px:.3f} ± {self.log_px_stderr:.3f}"),
            ("ELBO", f"{self.elbo:.3f} ± {self.elbo_stderr:.3f}"),
            ("  reconstruction E_q[log p(x|z)]", f"{self.recon:.3f}"),
            ("  KL(q(z|x) || p(z))", f"{self.kl:.3f}"),
            (f"ELBO (mean of the K={self.k} log-ratios)", f"{self.elbo_k:.3f}"),
            ("log p(x) - ELBO", f"{self.log_px - self.elbo:.3f}"),
            ("bits per dimension", f"{self.bits_per_dim:.4f}"),
            ("active units (Cov > 0.01)", f"{self.active_units} / {self.n_latent}"),
        ]
        if self.surgery is not None:
            s = self.surgery
            rows += [
                ("ELBO surgery: average KL", f"{s.average_kl:.3f}"),
                ("  KL(q(z) || p(z)) (marginal)", f"{s.marginal_kl:.3f}"),
                ("  I(x; z) (mutual information)", f"{s.mutual_information:.3f}"),
                ("  I(x; z) upper bound log N", f"{s.mutual_information_bound:.3f}"),
            ]
        if self.gaps is not None:
            g = self.gaps
            rows += [
                (f"gaps over {g.n} points (q* = {g.kind})", ""),
                ("  log p(x)", f"{g.log_px:.3f}"),
                ("  ELBO(q*) per-point optimized", f"{g.elbo_local:.3f}"),
                ("  ELBO(q) amortized", f"{g.elbo_amortized:.3f}"),
                ("  approximation gap", f"{g.approximation_gap:.3f}"),
                ("  amortization gap", f"{g.amortization_gap:.3f}"),
            ]
        width = max(len(name) for name, _ in rows)
        title = f"{self.split} set: {self.n} images, {self.n_dims} dims, {self.seconds:.1f} s"
        lines = [title, "-" * (width + 20)]
        lines += [f"{name:<{width}}  {value}" for name, value in rows]
        lines += [f"warning: {text}" for text in self.warnings]
        return "\n".join(lines)


def _stderr(values: torch.Tensor) -> float:
    return float(values.std() / math.sqrt(values.numel())) if values.numel() > 1 else math.nan


def evaluate(
    vae: VAE,
    images: torch.Tensor,
    k: int = 5000,
    *,
    split: str = "test",
    gaps: int = 0,
    gap_kind: str = "auto",
    gap_steps: int = 1000,
    surgery_samples: int = 1000,
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
        ``(N, C, H, W)`` in the data set's stored form, binary for a binary likelihood.
    k
        Importance samples per data point for log p(x) (and for the gaps).
    gaps
        Number of leading images for which the inference gaps are computed (0: none).
    gap_kind, gap_steps
        Family and Adam steps of the per-point q* (see :func:`inference_gaps`).
    surgery_samples
        Draws of the aggregate posterior for KL(q(z) || p(z)).

    Returns
    -------
    EvaluationResult
    """
    from pyrovae.objectives import elbo_terms

    if images.shape[0] < 2:
        raise ConfigError("evaluation needs at least two images")
    if gaps < 0:
        raise ConfigError(f"--gaps must be >= 0, got {gaps}")
    started = time.perf_counter()
    device = _model_device(vae)
    log_px, elbo_k = _importance_all(vae, images, k, chunk_size, batch_size, progress)
    recon, kl, means, noise = [], [], [], []
    with torch.no_grad(), _eval_mode(vae):
        for index in _batches(images, batch_size):
            x = to_unit_float(images[index].to(device))
            terms = elbo_terms(vae.model, vae.guide, x)
            recon.append(terms.recon.double())
            kl.append(terms.kl.double())
            mean, mean_noise = _posterior_mean_and_noise(vae.qz(x), MEAN_DRAWS)
            means.append(mean.double())  # (batch, n_latent)
            noise.append(mean_noise.double())  # (batch, n_latent)
    recon_t, kl_t = torch.cat(recon), torch.cat(kl)
    # Sampled means (flow guides) spread by Var_q[z_u] / n even for a unit that
    # ignores x; subtracting that noise keeps collapsed units below the threshold.
    variances = (torch.cat(means).var(dim=0) - torch.cat(noise).mean(0)).clamp(min=0)
    n_active = int((variances > ACTIVE_UNIT_THRESHOLD).sum())
    warnings = []
    if n_active * 2 < vae.n_latent:
        warnings.append(
            f"only {n_active} of {vae.n_latent} latent units are active: most of the latent "
            "space is unused (posterior collapse); try KL warm-up (--kl-warmup) or fewer units"
        )
    surgery: SurgeryResult | None = None
    if getattr(vae.guide_net, "scores_any_z", True):
        surgery = elbo_surgery(vae, images, float(kl_t.mean()), samples=surgery_samples)
    else:
        warnings.append(
            f"ELBO surgery skipped: the {vae.config.guide} guide has no density at codes it "
            "did not draw itself (no closed-form inverse), which the aggregate posterior needs"
        )
    gap_result = None
    if gaps:
        gap_result = inference_gaps(
            vae, images[:gaps], k, kind=gap_kind, steps=gap_steps, chunk_size=chunk_size
        )
    if device.type == "cuda":
        torch.cuda.synchronize()
    n_dims = math.prod(vae.image_shape)
    elbo_t = recon_t - kl_t
    return EvaluationResult(
        split=split,
        n=images.shape[0],
        k=k,
        n_dims=n_dims,
        log_px=float(log_px.mean()),
        log_px_stderr=_stderr(log_px),
        elbo=float(elbo_t.mean()),
        elbo_stderr=_stderr(elbo_t),
        elbo_k=float(elbo_k.mean()),
        recon=float(recon_t.mean()),
        kl=float(kl_t.mean()),
        bits_per_dim=float(-log_px.mean() / (n_dims * math.log(2))),
        active_units=n_active,
        n_latent=vae.n_latent,
        unit_variances=variances.tolist(),
        surgery=surgery,
        gaps=gap_result,
        seconds=time.perf_counter() - started,
        warnings=warnings,
    )


def evaluate_run(
    run_dir: str | Path | None = None,
    *,
    split: str = "test",
    k: int = 5000,
    gaps: int = 0,
    n: int | None = None,
    device: str = "auto",
    seed: int | None = 0,
    json_path: str | Path | None = None,
    progress: bool = False,
) -> EvaluationResult:
    """:func:`evaluate` on the ``split`` images of a trained run (the first ``n`` if given).

    Writes the result as JSON to ``json_path`` when given. ``seed`` seeds the draws
    without changing the caller's RNG state.
    """
    from pyrovae.api import load_run

    if split not in ("test", "train"):
        raise ConfigError(f"--split must be test or train, got {split!r}")
    with restored_rng(device, active=seed is not None):
        run = load_run(run_dir, device=device)
        if json_path is not None:
            # Before the evaluation, which can take long, rather than after it.
            check_output_file(json_path)
        data = run.data()
        images = data.test if split == "test" else data.train
        if n is not None:
            images = images[:n]
        if seed is not None:
            torch.manual_seed(seed)
        result = evaluate(run.vae, images, k, split=split, gaps=gaps, progress=progress)
    if json_path is not None:
        text = json.dumps(result.to_dict(), indent=2) + "\n"
        atomic_write_text(json_path, text)
    return result
