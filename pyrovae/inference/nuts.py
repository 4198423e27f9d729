"""A reference posterior p(z|x) with the decoder fixed, sampled by Pyro's NUTS.

Hoffman & Gelman (2014), "The No-U-Turn Sampler"; several chains, with
R-hat and ESS from :func:`arviz.summary` (Vehtari et al. 2021).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from pyrovae.errors import ConfigError
from pyrovae.model.vae import VAE
from pyrovae.runtime import frozen, progress_bar, threads
from pyrovae.sites import LATENT

if TYPE_CHECKING:
    import arviz as az


#: Vehtari et al. (2021): chains agree when R-hat is below this.
R_HAT_OK = 1.01


@dataclass
class NutsReference:
    """Draws of p(z|x) by NUTS with the decoder fixed.

    Attributes
    ----------
    draws
        ``(chain, draw, datapoint, latent)``.
    summary
        One row per (datapoint, latent) from :func:`arviz.summary`: ``mean``,
        ``sd``, ``r_hat``, ``ess_bulk``, ``ess_tail``.
    seconds
        Wall time of the sampling.
    """

    draws: np.ndarray
    summary: list[dict[str, Any]]
    seconds: float

    @property
    def max_r_hat(self) -> float:
        return max(row["r_hat"] for row in self.summary)

    @property
    def min_ess_bulk(self) -> float:
        return min(row["ess_bulk"] for row in self.summary)


def latent_coords(n_points: int, n_latent: int) -> dict[str, np.ndarray]:
    return {"datapoint": np.arange(n_points), "latent": np.arange(n_latent)}


def posterior_idata(draws: np.ndarray) -> az.InferenceData:
    import arviz as az

    return az.from_dict(
        posterior={LATENT: draws},
        coords=latent_coords(draws.shape[2], draws.shape[3]),
        dims={LATENT: ["datapoint", "latent"]},
    )


def nuts_reference(
    vae: VAE,
    x: torch.Tensor,
    *,
    chains: int = 4,
    draws: int = 200,
    warmup: int = 200,
    init_radius: float = 2.0,
    progress: bool = False,
) -> NutsReference:
    """Sample p(z|x) for the images ``x`` ``(M, C, H, W)`` (on [0, 1]) with NUTS.

    The target is log p(z) + log p(x|z) of the VAE with its networks frozen,
    handed to Pyro's NUTS as a potential function (no tracing per step). One
    run per chain, one after another (no subprocesses), each over the M
    points' codes together, started uniformly in [-``init_radius``,
    ``init_radius``] as Pyro's ``init_to_uniform`` does, so that chains start
    apart and R-hat can detect non-convergence. ``progress``: one bar on stderr
    over every chain's steps.
    """
    if chains < 2:
        raise ConfigError(f"NUTS needs at least 2 chains for R-hat, got {chains}")
    if draws < 10 or warmup < 1:
        raise ConfigError("NUTS needs at least 10 draws and 1 warm-up step")
    shape = (x.shape[0], vae.n_latent)

    def potential(params: dict[str, torch.Tensor]) -> torch.Tensor:
        z = params[LATENT]  # (M, n_latent)
        return -vae.log_joint(x, z).sum()

    started = time.perf_counter()
    steps = progress_bar(
        range(chains * (warmup + draws)), f"NUTS, {chains} chains", progress, unit="step"
    )
    bar = steps if hasattr(steps, "update") else None
    # One intra-op CPU thread: NUTS differentiates a few codes thousands of times, where
    # thread start-up costs more than it saves (10x slower with 2 threads on a busy machine).
    with frozen(vae), threads(1 if x.device.type == "cpu" else None):
        per_chain = []
        for _ in range(chains):
            init = (torch.rand(shape, device=x.device) * 2 - 1) * init_radius
            per_chain.append(_run_chain(potential, init, draws, warmup, bar))  # (draw, M, L)
    if bar is not None:
        bar.close()  # type: ignore[attr-defined]
    samples = np.stack(per_chain)  # (chain, draw, M, L)
    return NutsReference(
        draws=samples, summary=_summary(samples), seconds=time.perf_counter() - started
    )


def _run_chain(
    potential: Callable[[dict[str, torch.Tensor]], torch.Tensor],
    init: torch.Tensor,
    draws: int,
    warmup: int,
    bar: Any,
) -> np.ndarray:
    """One NUTS chain from ``init`` ``(M, L)``: its ``draws`` ``(draws, M, L)``, each step
    counted on ``bar`` (a tqdm bar or ``None``)."""
    from pyro.infer import MCMC, NUTS

    def advance(*_: Any) -> None:
        if bar is not None:
            bar.update()

    mcmc = MCMC(
        NUTS(potential_fn=potential),
        num_samples=draws,
        warmup_steps=warmup,
        initial_params={LATENT: init},
        disable_progbar=True,
        hook_fn=advance,
    )
    mcmc.run()
    return mcmc.get_samples()[LATENT].detach().cpu().numpy()


def _summary(samples: np.ndarray) -> list[dict[str, Any]]:
    """One row per (datapoint, latent) of :func:`arviz.summary` of ``samples``
    ``(chain, draw, M, L)``."""
    import arviz as az

    table: Any = az.summary(posterior_idata(samples), kind="all", round_to="none")  # DataFrame
    columns = ("mean", "sd", "r_hat", "ess_bulk", "ess_tail")
    return [
        {"variable": str(name), **{key: float(table.loc[name, key]) for key in columns}}
        for name in table.index
    ]


def gaussian_w2(a: np.ndarray, b: np.ndarray) -> float:
    """2-Wasserstein distance between Gaussians fitted to draws ``a`` and ``b`` ``(n, d)``.

    W2^2 = |m_a - m_b|^2 + tr(C_a + C_b - 2 (C_b^1/2 C_a C_b^1/2)^1/2).
    """
    from scipy.linalg import sqrtm

    mean_a, mean_b = a.mean(0), b.mean(0)
    cov_a = np.atleast_2d(np.cov(a, rowvar=False))
    cov_b = np.atleast_2d(np.cov(b, rowvar=False))
    root_b = sqrtm(cov_b).real
    cross = sqrtm(root_b @ cov_a @ root_b).real
    w2 = np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a + cov_b - 2 * cross)
    return float(math.sqrt(max(w2, 0.0)))
