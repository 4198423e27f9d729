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

import math
from collections.abc import Iterator

import torch
from torch.distributions import Distribution

from pyrovae.data import to_unit_float
from pyrovae.errors import ConfigError
from pyrovae.model import VAE

#: Default budget of decoded pixels held at once (samples x data points x pixels):
#: 2^24 float32 values, 64 MiB per tensor of that size.
DEFAULT_ELEMENT_BUDGET = 1 << 24


def _model_device(vae: VAE) -> torch.device:
    return next(vae.parameters()).device


def log_importance_weights(
    vae: VAE,
    x: torch.Tensor,
    n: int,
    proposal: Distribution | None = None,
) -> torch.Tensor:
    """Log importance ratios log p(x, z) - log r(z) for ``n`` draws z ~ r per data point.

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
    torch.Tensor
        ``(n, batch)``.
    """
    r = vae.qz(x) if proposal is None else proposal
    z = r.sample((n,))  # (n, batch, n_latent)
    log_r = r.log_prob(z)  # (n, batch)
    log_joint = vae.prior().log_prob(z) + vae.px(z).log_prob(x)  # (n, batch)
    return log_joint - log_r


def auto_chunk_size(vae: VAE, batch_size: int, budget: int = DEFAULT_ELEMENT_BUDGET) -> int:
    """Samples per chunk so that ``chunk x batch_size x pixels`` stays within ``budget``."""
    n_pixels = math.prod(vae.image_shape)
    return max(1, budget // (batch_size * n_pixels))


def _batches(images: torch.Tensor, batch_size: int) -> Iterator[slice]:
    for start in range(0, images.shape[0], batch_size):
        yield slice(start, start + batch_size)


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
    if k < 1:
        raise ConfigError(f"-k must be at least 1, got {k}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    if chunk_size is not None and chunk_size < 1:
        raise ConfigError(f"chunk_size must be at least 1, got {chunk_size}")
    chunk = min(k, chunk_size or auto_chunk_size(vae, batch_size))
    device = _model_device(vae)
    was_training = vae.training
    vae.eval()
    out = torch.empty(images.shape[0], dtype=torch.float64, device=device)
    batches = _batches(images, batch_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(
            list(batches), desc=f"log p(x), K={k}", unit="batch", leave=False, disable=None
        )
    try:
        for index in batches:
            x = to_unit_float(images[index].to(device))  # (batch, C, H, W)
            total = torch.full((x.shape[0],), -math.inf, dtype=torch.float64, device=device)
            for start in range(0, k, chunk):
                log_w = log_importance_weights(vae, x, min(chunk, k - start))  # (chunk, batch)
                total = torch.logaddexp(total, torch.logsumexp(log_w.double(), dim=0))
            out[index] = total - math.log(k)
    finally:
        vae.train(was_training)
    return out
