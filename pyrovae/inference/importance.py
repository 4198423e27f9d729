"""Importance-sampled log p(x) with the guide as proposal, and bits per dimension.

Burda, Grosse & Salakhutdinov (2016), "Importance Weighted Autoencoders":

    log p(x) ~= log (1/K) sum_k p(x, z_k) / q(z_k|x),   z_k ~ q(z|x),

a stochastic lower bound that tightens to log p(x) as K grows. Draws come in
chunks folded into a running log-sum-exp, so memory does not grow with K.
Everything is computed from ``vae.qz(x)`` and ``vae.log_joint``, so it holds
for every guide, prior and likelihood.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields

import pyro
import torch
from pyro.distributions import is_validation_enabled
from torch.distributions import Distribution
from torch.overrides import TorchFunctionMode

from pyrovae.data.pixels import to_unit_float
from pyrovae.errors import ConfigError
from pyrovae.inference.stats import mc_standard_error, standard_error
from pyrovae.model.build import available_memory
from pyrovae.model.vae import VAE
from pyrovae.runtime import eval_mode, module_device, progress_bar

#: Most bytes a chunk of draws may hold on the CPU by default. Chunks that stay near
#: the processor's last-level cache run faster: on this project's machine (32 MiB L3,
#: one thread, MLP 784-400-50 on Fashion-MNIST) chunks of 15-62 MB took 4.0-4.4 s
#: where chunks of 123-246 MB took 5.9-7.8 s for the same draws.
CPU_BUDGET_CAP = 64 * 2**20

#: Share of the free memory of the device a chunk may take by default.
BUDGET_SHARE = 0.25

#: Fewest bytes a budget may give: below this a chunk is a few draws of one image.
MIN_MEMORY_BUDGET = 2**20

_UNITS = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


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
    return z, vae.log_joint(x, z) - log_r  # (n, batch)


def log_importance_weights(
    vae: VAE,
    x: torch.Tensor,
    n: int,
    proposal: Distribution | None = None,
) -> torch.Tensor:
    """The log importance ratios ``(n, batch)`` of :func:`importance_draws`."""
    return importance_draws(vae, x, n, proposal)[1]


def parse_memory_budget(text: str | int | None) -> int | None:
    """``"256M"``, ``"1.5GiB"``, ``"64MB"``, bytes as a number, or ``"auto"``/``None``
    (the device's default, :func:`default_memory_budget`) -> bytes or ``None``.

    Units are binary (K = 2^10 bytes, M = 2^20, G = 2^30); ``B``, ``iB`` and
    lower case are accepted.
    """
    if text is None or (isinstance(text, str) and text.strip().lower() in ("", "auto")):
        return None
    if isinstance(text, int) and not isinstance(text, bool):
        value = float(text)
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(?:i?b)?\s*", str(text).lower())
        if match is None:
            raise ConfigError(
                f"--memory-budget takes a size such as 256M, 1.5G or 64MB, or auto; got {text!r}"
            )
        value = float(match.group(1)) * _UNITS[match.group(2)]
    if value < MIN_MEMORY_BUDGET:
        raise ConfigError(f"--memory-budget must be at least 1M, got {text!r}")
    return int(value)


def default_memory_budget(device: torch.device) -> int:
    """Bytes a chunk of draws may take on ``device``: :data:`BUDGET_SHARE` of its free
    memory, capped at :data:`CPU_BUDGET_CAP` on the CPU (where a larger chunk is no faster)."""
    free = available_memory(device)
    if device.type == "cuda":
        return max(MIN_MEMORY_BUDGET, int(BUDGET_SHARE * (free or 0)))
    if free is None:
        return CPU_BUDGET_CAP
    return max(MIN_MEMORY_BUDGET, min(CPU_BUDGET_CAP, int(BUDGET_SHARE * free)))


class _Counter(TorchFunctionMode):
    """A torch function mode that adds something up in ``count``."""

    count: float


class _TensorBytes(_Counter):
    """Adds up the bytes of the new tensors the torch calls run inside it return.

    Views and expansions of an input (which allocate nothing) are left out; the
    sum is that of every tensor made, an upper bound of what is alive at once.
    """

    def __init__(self) -> None:
        super().__init__()
        self.count = 0.0

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        if isinstance(out, torch.Tensor) and not isinstance(out, torch.nn.Parameter):
            inputs = {a.untyped_storage().data_ptr() for a in args if isinstance(a, torch.Tensor)}
            storage = out.untyped_storage()
            if storage.data_ptr() not in inputs:
                self.count += storage.nbytes()
        return out


class MatmulFlops(_Counter):
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
        self.count = 0.0  # floating-point operations

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        if func is torch.nn.functional.linear:
            x, weight = args[0], args[1]
            self.count += 2.0 * (x.numel() // max(x.shape[-1], 1)) * weight.numel()
        elif func in self._PRODUCTS and isinstance(out, torch.Tensor):
            inner = args[-1].shape[-2] if args[-1].dim() > 1 else args[-1].shape[-1]
            self.count += 2.0 * out.numel() * inner
        return out


@torch.no_grad()
def _per_draw(vae: VAE, measure: Callable[[], _Counter], proposal: Distribution | None) -> float:
    """What ``measure``'s counter adds up over one draw of z for one image in
    :func:`importance_batch`: two chunk sizes on two blank images, and their
    difference, so that the per-image encoder is left out."""
    device = module_device(vae)
    x = torch.zeros((2, *vae.data_shape), device=device)
    with eval_mode(vae):
        r = vae.qz(x) if proposal is None else proposal
        counts = []
        for n in (2, 4):
            with measure() as counter:
                _chunk_terms(vae, x, r, n)
            counts.append(counter.count)
    return (counts[1] - counts[0]) / (2 * x.shape[0])


def draw_flops(vae: VAE) -> float:
    """Floating-point operations (matrix products) of one draw of z for one image: the
    decoder, the prior's density and the guide's (a VampPrior with a flow guide
    inverts the flow once per pseudo-input)."""
    return max(0.0, _per_draw(vae, MatmulFlops, None))


def bytes_per_sample(vae: VAE, proposal: Distribution | None = None) -> float:
    """Bytes one draw of z for one image costs: its code, the decoder's activations
    (the network widths), the likelihood's terms per pixel and a flow guide's
    layers, as the tensors made (:class:`_TensorBytes`)."""
    return max(1.0, _per_draw(vae, _TensorBytes, proposal))


def auto_chunk_size(vae: VAE, batch_size: int, memory_budget: int | None = None) -> int:
    """Draws per chunk so that a chunk of ``batch_size`` images stays within
    ``memory_budget`` bytes (default :func:`default_memory_budget` of the VAE's device)."""
    budget = memory_budget or default_memory_budget(module_device(vae))
    return max(1, int(budget // (bytes_per_sample(vae) * batch_size)))


def index_batches(images: torch.Tensor, batch_size: int) -> Iterator[slice]:
    for start in range(0, images.shape[0], batch_size):
        yield slice(start, start + batch_size)


def check_k(k: int, batch_size: int, chunk_size: int | None) -> None:
    if k < 1:
        raise ConfigError(f"k must be at least 1, got {k}")
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
    :func:`pyrovae.inference.psis.psis_khat`). ``log_px_elbo_cov`` and
    ``log_px_recon_cov`` are the Monte Carlo covariances of ``log_px`` with
    ``elbo`` and with ``recon`` (the same draws make them correlated, with either
    sign), by the same delta method: (sum_k w_k e_k / sum_k w_k - mean(e)) / (K - 1).
    """

    log_px: torch.Tensor
    elbo: torch.Tensor
    log_px_var: torch.Tensor
    elbo_var: torch.Tensor
    recon: torch.Tensor
    recon_var: torch.Tensor
    kl: torch.Tensor
    kl_var: torch.Tensor
    log_px_elbo_cov: torch.Tensor
    log_px_recon_cov: torch.Tensor

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


def _chunk_terms(
    vae: VAE, x: torch.Tensor, r: Distribution, n: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """log p(x|z), log r(z) - log p(z) and log w of ``n`` draws z ~ r, each ``(n, batch)``
    float64."""
    z = r.sample((n,))  # (n, batch, n_latent)
    recon = vae.log_px(x, z).double()  # observed values only, for incomplete data
    kl = r.log_prob(z).double() - vae.prior().log_prob(z).double()
    return recon, kl, recon - kl


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
    # sum_k w_k e_k / exp(lse) for e = log w and log p(x|z), rescaled as lse grows.
    weighted = {"log_w": torch.zeros_like(lse), "recon": torch.zeros_like(lse)}
    moments = {name: _ChunkMoments(shape, x.device) for name in ("log_w", "recon", "kl")}
    # The first chunk, of one draw, checks the arguments and values of every
    # distribution (when validation is on); the others, of the same images, skip the
    # checks, which pass over every pixel of a chunk (a whole first chunk checked, 41
    # draws of 100 Fashion-MNIST images out of 500, cost 4% of the time).
    validate = is_validation_enabled()
    start = 0
    while start < k:
        n = min(1 if start == 0 and validate else chunk_size, k - start)
        with pyro.validation_enabled(start == 0 and validate):
            recon, kl, log_w = _chunk_terms(vae, x, r, n)
        start += n
        grown = torch.logaddexp(lse, torch.logsumexp(log_w, dim=0))
        kept, share = torch.exp(lse - grown), torch.exp(log_w - grown)
        weighted = {name: total * kept + (share * (recon if name == "recon" else log_w)).sum(0)
                    for name, total in weighted.items()}  # fmt: skip
        lse = grown
        lse2 = torch.logaddexp(lse2, torch.logsumexp(2 * log_w, dim=0))
        for name, values in (("log_w", log_w), ("recon", recon), ("kl", kl)):
            moments[name].add(values)
    if k > 1:
        # Var(w) / (K mean(w)^2) = (K sum w^2 / (sum w)^2 - 1) / (K - 1).
        log_px_var = (torch.exp(math.log(k) + lse2 - 2 * lse) - 1).clamp(min=0) / (k - 1)
    else:
        log_px_var = torch.full(shape, math.nan, dtype=torch.float64, device=x.device)
    cov = {name: (weighted[name] - moments[name].mean) / (k - 1) if k > 1 else log_px_var
           for name in weighted}  # fmt: skip
    return ImportanceEstimate(
        log_px=lse - math.log(k),
        elbo=moments["log_w"].mean,
        log_px_var=log_px_var,
        elbo_var=moments["log_w"].var_of_mean(),
        recon=moments["recon"].mean,
        recon_var=moments["recon"].var_of_mean(),
        kl=moments["kl"].mean,
        kl_var=moments["kl"].var_of_mean(),
        log_px_elbo_cov=cov["log_w"],
        log_px_recon_cov=cov["recon"],
    )


@torch.no_grad()
def importance_log_marginal(
    vae: VAE,
    images: torch.Tensor,
    k: int = 5000,
    *,
    chunk_size: int | None = None,
    batch_size: int = 100,
    memory_budget: int | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Importance-sampled log p(x) per data point, with q(z|x) as proposal.

    The K samples of each data point are drawn in chunks and folded into a
    running log-sum-exp, so peak memory depends on the chunk and not on K. Runs
    on the VAE's device.

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
        Samples drawn at once per batch; default: as many as ``memory_budget``
        holds (:func:`auto_chunk_size`).
    batch_size
        Data points processed together.
    memory_budget
        Bytes a chunk may take; default :func:`default_memory_budget`.
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
    return importance_all(
        vae, images, k, chunk_size, batch_size, progress, memory_budget=memory_budget
    ).log_px


def importance_all(
    vae: VAE,
    images: torch.Tensor,
    k: int,
    chunk_size: int | None,
    batch_size: int,
    progress: bool,
    desc: str = "log p(x)",
    memory_budget: int | None = None,
) -> ImportanceEstimate:
    """:func:`importance_batch` over ``images`` batch by batch, with chunks of
    ``chunk_size`` draws or as many as ``memory_budget`` bytes hold."""
    check_k(k, batch_size, chunk_size)
    chunk = min(k, chunk_size or auto_chunk_size(vae, min(batch_size, len(images)), memory_budget))
    device = module_device(vae)
    batches = list(index_batches(images, batch_size))
    parts = []
    with eval_mode(vae):
        for index in progress_bar(batches, f"{desc}, K={k}", progress, unit="batch"):
            x = to_unit_float(images[index].to(device))  # (batch, C, H, W)
            parts.append(importance_batch(vae, x, k, chunk))
    return ImportanceEstimate.cat(parts)


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
    memory_budget: int | None = None,
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

    On incomplete data (NaN) D is each point's number of observed values.
    """
    n_dims = math.prod(vae.data_shape)
    scale: float | torch.Tensor = n_dims * math.log(2)
    if images.dtype.is_floating_point and bool(torch.isnan(images).any()):
        observed = (~torch.isnan(images)).flatten(1).sum(1).double()  # (N,)
        scale = observed * math.log(2)
    if vae.likelihood.discrete:
        estimate = log_px
        offset, note = 0.0, "code length of the likelihood's probability mass"
    elif images.dtype == torch.uint8:
        noise = torch.rand(images.shape, device=images.device)
        dequantized = (images.float() + noise) / 256.0  # (N, C, H, W) in [0, 1)
        estimate = importance_all(
            vae,
            dequantized,
            k,
            chunk_size,
            batch_size,
            progress,
            "dequantized log p(x)",
            memory_budget,
        )
        offset = n_dims * _LOG_256
        note = (
            "8-bit data, uniform dequantization: -log p((x+u)/256) + D log 256, one draw of "
            "u per image (the ± MC is that of the importance weights given u)"
        )
    else:
        reason = (
            "withheld: a continuous likelihood on data that are not 8-bit (uint8) gives a "
            "density, not a code length"
        )
        return BitsPerDim(None, None, None, reason)
    # On the estimates' device: the images may be on the CPU and the model elsewhere.
    scale = torch.as_tensor(scale, dtype=torch.float64, device=estimate.log_px.device)
    bits = (offset - estimate.log_px) / scale
    return BitsPerDim(
        value=float(bits.mean()),
        stderr=standard_error(bits),
        mc_stderr=mc_standard_error(estimate.log_px_var / scale**2),
        note=note,
    )
