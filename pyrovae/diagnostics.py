"""Can q(z|x) be trusted? Posterior diagnostics of a VAE with ArviZ.

- PSIS: for each data point, draws z ~ q(z|x) and the log importance ratios
  log p(x, z) - log q(z|x); the Pareto shape k̂ of their upper tail
  (:func:`arviz.psislw`) says whether q covers the posterior. Yao, Vehtari,
  Simpson & Gelman (2018), "Yes, but did it work?: Evaluating variational
  inference": k̂ < 0.5 good, 0.5-0.7 usable with Pareto smoothing, > 0.7 q
  is unreliable as an approximation or proposal.
- A reference posterior p(z|x) with the decoder fixed, sampled by Pyro's NUTS
  (Hoffman & Gelman 2014) in several chains, with R-hat and ESS from
  :func:`arviz.summary` (Vehtari et al. 2021), drawn over q(z|x) with a
  distance between the two.
- A posterior predictive check on a per-image statistic (:func:`arviz.plot_ppc`).
- The aggregate posterior in latent space, coloured by label, over the prior.

Everything lands in an ArviZ ``InferenceData`` (dims ``chain``, ``draw``,
``datapoint``, ``latent``), a JSON summary and one self-contained HTML page.
The estimators take log-weights and proposals, not only a VAE, so that they
are tested against exact posteriors (:mod:`pyrovae.ppca`).
"""

from __future__ import annotations

import base64
import copy
import html
import io
import json
import math
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from pyrovae.data import to_unit_float
from pyrovae.errors import ConfigError
from pyrovae.evaluation import (
    auto_chunk_size,
    json_safe,
    posterior_mean,
    progress_bar,
    restored_rng,
)
from pyrovae.files import atomic_write_text, atomic_write_via_name, check_output_folder
from pyrovae.local_guides import frozen
from pyrovae.model import VAE
from pyrovae.sites import LATENT

if TYPE_CHECKING:
    import arviz as az

#: Yao et al. (2018): below this k̂ importance sampling with q is reliable.
KHAT_GOOD = 0.5
#: Above this k̂ neither q nor PSIS on q can be trusted.
KHAT_BAD = 0.7
#: Vehtari et al. (2021): chains agree when R-hat is below this.
R_HAT_OK = 1.01

REPORT_HTML = "diagnostics.html"
REPORT_NETCDF = "diagnostics.nc"
REPORT_NUTS_NETCDF = "nuts_reference.nc"
REPORT_JSON = "diagnostics.json"


# --------------------------------------------------------------------------- #
# PSIS
# --------------------------------------------------------------------------- #


#: Log-weights whose spread is within this many units of round-off of the log
#: densities they come from are equal: the proposal is the posterior.
ROUNDOFF_ULPS = 1024


def roundoff_tolerance(
    log_joint: torch.Tensor, log_r: torch.Tensor, precision: torch.dtype | None = None
) -> np.ndarray:
    """Per data point, the spread of log p(x, z) - log r(z) that round-off alone can make.

    ``ROUNDOFF_ULPS`` units of round-off of ``precision`` (default the terms' dtype;
    the parameters' dtype when the terms were computed more precisely than the
    parameters are stored), relative to the terms' size: max over draws of
    |log p(x, z)| + |log r(z)|, both ``(draws, datapoints)``. A float32 sum over
    784 pixels loses about 100 units; float32 parameters, rounded, move a
    float64 computation by about one.
    """
    eps = torch.finfo(precision or log_joint.dtype).eps
    size = (log_joint.double().abs() + log_r.double().abs()).amax(0)  # (datapoints,)
    return np.asarray((ROUNDOFF_ULPS * eps * size).cpu())


def psis_khat(
    log_weights: torch.Tensor | np.ndarray, roundoff: np.ndarray | float | None = None
) -> np.ndarray:
    """Pareto k̂ of the importance ratios of each data point; NaN where they are equal.

    Parameters
    ----------
    log_weights
        ``(draws, datapoints)`` log importance ratios log p(x, z) - log r(z).
    roundoff
        Per data point (or one for all), the spread below which the ratios count as
        equal up to round-off (:func:`roundoff_tolerance`). Default: ``ROUNDOFF_ULPS``
        units of round-off of ``log_weights``' dtype relative to their size, right
        when they were computed in that dtype.

    Returns
    -------
    numpy.ndarray
        ``(datapoints,)``, in float64. Points whose ratios are all equal up to
        round-off (the proposal is the posterior) have no tail, only rounding
        noise, whose k̂ would be noise: they are NaN, reported as exact.
    """
    import arviz as az

    tensor = torch.as_tensor(log_weights)
    if roundoff is None:
        roundoff = (
            ROUNDOFF_ULPS
            * torch.finfo(tensor.dtype).eps
            * np.asarray(tensor.double().abs().amax(0).cpu())
        )
    lw = np.asarray(tensor.double().cpu()).T  # (datapoints, draws)
    if lw.ndim != 2 or lw.shape[1] < 10:
        raise ConfigError("PSIS needs log-weights of shape (draws, datapoints) with >= 10 draws")
    exact = np.ptp(lw, axis=1) <= np.broadcast_to(roundoff, lw.shape[:1])
    khat = np.full(lw.shape[0], np.nan)
    if not exact.all():
        _, tail = az.psislw(lw[~exact])
        khat[~exact] = np.atleast_1d(np.asarray(tail, dtype=float))
    return khat


def khat_shares(khat: np.ndarray) -> dict[str, float]:
    """Shares of points that are exact (NaN k̂), good (k̂ < 0.5), usable (0.5-0.7) and bad
    (> 0.7)."""
    khat = np.asarray(khat, dtype=float)
    return {
        "exact": float(np.mean(np.isnan(khat))),
        "good": float(np.mean(khat < KHAT_GOOD)),
        "usable": float(np.mean((khat >= KHAT_GOOD) & (khat <= KHAT_BAD))),
        "bad": float(np.mean(khat > KHAT_BAD)),
    }


# --------------------------------------------------------------------------- #
# NUTS reference posterior
# --------------------------------------------------------------------------- #


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

    def inference_data(self) -> az.InferenceData:
        return _posterior_idata(self.draws)


def _latent_coords(n_points: int, n_latent: int) -> dict[str, np.ndarray]:
    return {"datapoint": np.arange(n_points), "latent": np.arange(n_latent)}


def _posterior_idata(draws: np.ndarray) -> az.InferenceData:
    import arviz as az

    return az.from_dict(
        posterior={LATENT: draws},
        coords=_latent_coords(draws.shape[2], draws.shape[3]),
        dims={LATENT: ["datapoint", "latent"]},
    )


@contextmanager
def _one_thread(device: torch.device) -> Iterator[None]:
    """One intra-op CPU thread: NUTS differentiates a few codes thousands of times, where
    thread start-up costs more than it saves (10x slower with 2 threads on a busy machine)."""
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


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
    import arviz as az
    from pyro.infer import MCMC, NUTS

    if chains < 2:
        raise ConfigError(f"NUTS needs at least 2 chains for R-hat, got {chains}")
    if draws < 10 or warmup < 1:
        raise ConfigError("NUTS needs at least 10 draws and 1 warm-up step")
    shape = (x.shape[0], vae.n_latent)

    def potential(params: dict[str, torch.Tensor]) -> torch.Tensor:
        z = params[LATENT]  # (M, n_latent)
        return -(vae.prior().log_prob(z) + vae.px(z).log_prob(x)).sum()

    started = time.perf_counter()
    per_chain = []
    steps = progress_bar(
        range(chains * (warmup + draws)), f"NUTS, {chains} chains", progress, unit="step"
    )
    bar = steps if hasattr(steps, "update") else None

    def advance(*_: Any) -> None:
        if bar is not None:
            bar.update()  # type: ignore[attr-defined]

    with frozen(vae), _one_thread(x.device):
        for _ in range(chains):
            init = (torch.rand(shape, device=x.device) * 2 - 1) * init_radius
            mcmc = MCMC(
                NUTS(potential_fn=potential),
                num_samples=draws,
                warmup_steps=warmup,
                initial_params={LATENT: init},
                disable_progbar=True,
                hook_fn=advance,
            )
            mcmc.run()
            per_chain.append(mcmc.get_samples()[LATENT].detach().cpu().numpy())  # (draw, M, L)
    if bar is not None:
        bar.close()  # type: ignore[attr-defined]
    samples = np.stack(per_chain)  # (chain, draw, M, L)
    table: Any = az.summary(_posterior_idata(samples), kind="all", round_to="none")  # DataFrame
    columns = ("mean", "sd", "r_hat", "ess_bulk", "ess_tail")
    summary = [
        {"variable": str(name), **{key: float(table.loc[name, key]) for key in columns}}
        for name in table.index
    ]
    return NutsReference(draws=samples, summary=summary, seconds=time.perf_counter() - started)


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


# --------------------------------------------------------------------------- #
# The report
# --------------------------------------------------------------------------- #


@dataclass
class DiagnosisResult:
    """What :func:`diagnose` measured and where it wrote it."""

    n: int
    draws: int
    khat: list[float | None]
    khat_shares: dict[str, float]
    nuts: dict[str, Any] | None
    ppc: dict[str, float]
    seconds: float
    paths: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The figures as plain JSON values (an undefined standard error is ``None``)."""
        return json_safe(asdict(self))

    def format_summary(self) -> str:
        s = self.khat_shares
        finite = [k for k in self.khat if k is not None]
        worst = f"max k̂ {max(finite):.2f}" if finite else "no tail anywhere"
        exact = f", exact {s['exact']:.0%}" if s["exact"] else ""
        lines = [
            f"PSIS over {self.n} points x {self.draws} draws of q(z|x): "
            f"k̂ < 0.5 {s['good']:.0%}, 0.5-0.7 {s['usable']:.0%}, > 0.7 {s['bad']:.0%}"
            f"{exact} ({worst})",
        ]
        if s["exact"]:
            lines.append(
                "  exact: importance ratios equal up to round-off (q(z|x) is the posterior)"
            )
        if self.nuts is not None:
            lines.append(
                f"NUTS reference for {self.nuts['points']} points, {self.nuts['chains']} chains: "
                f"max R-hat {self.nuts['max_r_hat']:.3f}, min bulk ESS "
                f"{self.nuts['min_ess_bulk']:.0f}, W2(q, NUTS) mean "
                f"{np.mean(self.nuts['w2']):.3f}"
            )
            if not self.nuts["max_r_hat"] < R_HAT_OK:
                lines.append(
                    f"warning: R-hat above {R_HAT_OK}: the NUTS chains disagree (a multimodal "
                    "posterior or too few draws), so the reference and W2 are not to be trusted; "
                    "try more --nuts-draws"
                )
        p = self.ppc
        lines.append(
            f"PPC on mean intensity: observed {p['observed_mean']:.4f}, replicated "
            f"{p['replicated_mean']:.4f} ± {p['replicated_mean_mc_stderr']:.4f}; "
            f"{p['outside_95']:.0%} ± {p['outside_95_stderr']:.0%} of images outside "
            "their 95% predictive interval"
        )
        lines += [f"wrote {path}" for path in self.paths.values()]
        return "\n".join(lines)


def _figure_png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def _plot_khat(khat: np.ndarray) -> str:
    import arviz as az
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    with warnings.catch_warnings():
        # ArviZ would rather have an ELPDData; k̂ of importance ratios is a plain array.
        warnings.simplefilter("ignore", FutureWarning)
        az.plot_khat(khat, ax=ax, show_hlines=True, show_bins=True)
    ax.set_xlabel("data point")
    ax.set_title("PSIS Pareto k̂ of q(z|x) as importance proposal")
    return _figure_png(fig)


def _plot_overlay(q_draws: np.ndarray, nuts: np.ndarray, max_latent: int = 4) -> str:
    """Marginals of q(z|x) and NUTS: one row per data point, one column per latent."""
    import arviz as az
    import matplotlib.pyplot as plt

    n_points, n_latent = nuts.shape[2], min(nuts.shape[3], max_latent)
    fig, axes = plt.subplots(
        n_points, n_latent, figsize=(2.6 * n_latent, 2.0 * n_points), squeeze=False
    )
    for i in range(n_points):
        for u in range(n_latent):
            ax = axes[i, u]
            az.plot_dist(
                q_draws[:, i, u], ax=ax, color="C0", label="q(z|x)" if i + u == 0 else None
            )
            az.plot_dist(
                nuts[:, :, i, u].ravel(), ax=ax, color="C1", label="NUTS" if i + u == 0 else None
            )
            ax.set_yticks([])
            ax.set_title(f"point {i}, z[{u}]", fontsize=9)
    fig.tight_layout()
    return _figure_png(fig)


def _plot_ppc(idata: az.InferenceData) -> str:
    import arviz as az
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    n_draws = idata["posterior_predictive"].sizes["draw"]
    options = {"var_names": ["mean_intensity"], "num_pp_samples": min(50, n_draws)}
    try:
        az.plot_ppc(idata, ax=ax, random_seed=0, **options)
    except ValueError:
        # A replication whose images all share one value (few pixels, few images) has
        # no density estimate; empirical distribution functions have no such trouble.
        ax.clear()
        az.plot_ppc(idata, ax=ax, random_seed=0, kind="cumulative", **options)
    ax.set_xlabel("per-image mean intensity")
    return _figure_png(fig)


def _plot_latent(
    means: np.ndarray, labels: np.ndarray | None, prior_draws: np.ndarray
) -> tuple[str, str]:
    """Aggregate posterior means over the prior's density, in 2-D (PCA beyond 2 dims)."""
    import matplotlib.pyplot as plt

    if means.shape[1] == 1:
        means = np.concatenate([means, np.zeros_like(means)], axis=1)
        # A spread second column (meaningless, as the plot says): on a line of zeros the
        # prior's kernel density estimate would be singular.
        spread = np.random.default_rng(0).standard_normal(prior_draws.shape)
        prior_draws = np.concatenate([prior_draws, spread], axis=1)
        axes_note = "z[0] (one latent unit)"
    elif means.shape[1] == 2:
        axes_note = "z[0], z[1]"
    else:
        from sklearn.decomposition import PCA

        pca = PCA(n_components=2).fit(means)
        means, prior_draws = pca.transform(means), pca.transform(prior_draws)
        axes_note = "first two principal components of E_q[z|x]"
    from scipy.stats import gaussian_kde

    fig, ax = plt.subplots(figsize=(6, 5))
    lo, hi = np.percentile(np.concatenate([means, prior_draws]), [0.5, 99.5], axis=0)
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 80), np.linspace(lo[1], hi[1], 80))
    density = gaussian_kde(prior_draws.T)(np.stack([gx.ravel(), gy.ravel()])).reshape(gx.shape)
    ax.contourf(gx, gy, density, levels=10, cmap="Greys")
    colour: dict[str, Any] = {"c": "C0"} if labels is None else {"c": labels, "cmap": "tab10"}
    points = ax.scatter(means[:, 0], means[:, 1], s=6, **colour)
    if labels is not None:
        fig.colorbar(points, ax=ax, label="label")
    ax.set_title(f"aggregate posterior E_q[z|x] over p(z) (grey): {axes_note}", fontsize=9)
    return _figure_png(fig), axes_note


def _html_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    def cell(value: Any) -> str:
        return f"{value:.3f}" if isinstance(value, float) else html.escape(str(value))

    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{cell(row[c])}</td>" for c in columns) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _html(title: str, sections: list[tuple[str, str]]) -> str:
    style = (
        "body{font-family:sans-serif;max-width:1000px;margin:2em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;"
        "text-align:right}img{max-width:100%}"
    )
    parts = [f"<h2>{html.escape(name)}</h2>\n{content}" for name, content in sections]
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>\n"
        + "\n".join(parts)
        + "</body></html>\n"
    )


def _img(png: str) -> str:
    return f"<img src='data:image/png;base64,{png}'>"


def posterior_predictive_summary(observed: np.ndarray, replicated: np.ndarray) -> dict[str, float]:
    """The check's figures, with standard errors, from ``observed`` ``(n,)`` statistics and
    ``replicated`` ``(draws, n)`` ones.

    ``outside_95`` (share of images outside their central 95% predictive interval)
    has a binomial standard error over the n images; ``replicated_mean`` and
    ``p_value_mean`` (mean over images of P(replicated >= observed)) have Monte
    Carlo standard errors over the replications.
    """
    draws, n = replicated.shape
    lo, hi = np.percentile(replicated, [2.5, 97.5], axis=0)
    outside = float(np.mean((observed < lo) | (observed > hi)))
    p_values = np.mean(replicated >= observed[None, :], axis=0)  # (n,)
    return {
        "observed_mean": float(observed.mean()),
        "replicated_mean": float(replicated.mean()),
        "replicated_mean_mc_stderr": float(replicated.mean(1).std(ddof=1) / math.sqrt(draws))
        if draws > 1
        else math.nan,
        "outside_95": outside,
        "outside_95_stderr": math.sqrt(outside * (1 - outside) / n),
        "p_value_mean": float(p_values.mean()),
        "p_value_mean_mc_stderr": float(np.sqrt(np.sum(p_values * (1 - p_values) / draws)) / n),
    }


@torch.no_grad()
def _q_draws(
    vae: VAE, x: torch.Tensor, draws: int, progress: bool = False
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """``draws`` z ~ q(z|x) ``(draws, n, L)``, their log ratios ``(draws, n)`` and the
    round-off tolerance of those ratios ``(n,)``, chunked.

    Computed in float64 on a copy of the VAE: when q(z|x) is the posterior, the
    ratios differ only by round-off, which float32 sums over the pixels make large
    enough (1e-5 to 1e-2 nats) to hand PSIS a spurious tail. What is left is the
    rounding of the float32 parameters, which the tolerance allows for.
    """
    precision = next(vae.parameters()).dtype
    vae64 = copy.deepcopy(vae).double()
    x64 = x.double()
    chunk = auto_chunk_size(vae, x.shape[0])
    qz = vae64.qz(x64)
    zs, joints, densities = [], [], []
    starts = range(0, draws, chunk)
    for start in progress_bar(starts, "PSIS draws of q(z|x)", progress, unit="chunk"):
        z = qz.sample((min(chunk, draws - start),))  # (chunk, n, L)
        densities.append(qz.log_prob(z))  # (chunk, n)
        joints.append(vae64.prior().log_prob(z) + vae64.px(z).log_prob(x64))  # (chunk, n)
        zs.append(z)
    log_joint, log_r = torch.cat(joints), torch.cat(densities)
    tolerance = roundoff_tolerance(log_joint, log_r, precision)
    return torch.cat(zs).to(precision), log_joint - log_r, tolerance


def diagnose(
    vae: VAE,
    images: torch.Tensor,
    out: str | Path,
    *,
    labels: torch.Tensor | None = None,
    n: int = 100,
    draws: int = 1000,
    nuts: int = 4,
    nuts_draws: int = 200,
    nuts_warmup: int = 200,
    chains: int = 4,
    ppc_draws: int = 100,
    latent_points: int = 2000,
    title: str = "pyrovae posterior diagnostics",
    progress: bool = False,
) -> DiagnosisResult:
    """Write the HTML report, the netCDF ``InferenceData`` and the JSON summary to ``out``.

    Parameters
    ----------
    vae
        A trained VAE.
    images
        ``(N, C, H, W)`` in the stored form (binary for a binary likelihood);
        the first ``n`` are diagnosed, the first ``latent_points`` are drawn
        in latent space.
    out
        Output folder.
    labels
        ``(N,)`` class labels for colouring the latent space, or ``None``.
    draws
        Draws of q(z|x) per point for PSIS.
    nuts
        Points (the first ones) with a NUTS reference; 0 skips NUTS.
    nuts_draws, nuts_warmup, chains
        NUTS draws and warm-up steps per chain, and the number of chains.
    ppc_draws
        Replicated data sets for the posterior predictive check.
    progress
        Progress bars on stderr for the PSIS draws, the NUTS chains and the
        latent codes.
    """
    import matplotlib

    matplotlib.use("Agg")
    import arviz as az
    import xarray as xr

    if n < 1 or draws < 10:
        raise ConfigError("diagnose needs -n >= 1 and --draws >= 10")
    if nuts < 0 or nuts > n:
        raise ConfigError(f"--nuts must be between 0 and -n ({n}), got {nuts}")
    started = time.perf_counter()
    out = check_output_folder(out)
    device = next(vae.parameters()).device
    n = min(n, images.shape[0])
    nuts = min(nuts, n)
    x = to_unit_float(images[:n].to(device))  # (n, C, H, W)
    vae.eval()

    z, log_w, roundoff = _q_draws(vae, x, draws, progress)  # (draws, n, L), (draws, n), (n,)
    khat = psis_khat(log_w, roundoff)
    shares = khat_shares(khat)

    with torch.no_grad():
        ppc_z = z[:ppc_draws]  # (ppc_draws, n, L)
        replicated = vae.px(ppc_z).sample().flatten(-3).mean(-1).cpu().numpy()  # (ppc, n)
    observed = x.flatten(1).mean(-1).cpu().numpy()  # (n,)
    ppc = posterior_predictive_summary(observed, replicated)

    coords = _latent_coords(n, vae.n_latent)
    z_np = z.cpu().numpy()[None]  # (chain=1, draw, datapoint, latent)
    lw_np = log_w.double().cpu().numpy()[None]  # (1, draw, datapoint)
    c, h, w = vae.image_shape
    observed_data = {
        "x": (("datapoint", "channel", "height", "width"), x.cpu().numpy()),
        "mean_intensity": (("datapoint",), observed),
    }
    if labels is not None:
        observed_data["label"] = (("datapoint",), labels[:n].cpu().numpy())
    idata = az.InferenceData(
        posterior=xr.Dataset(
            {LATENT: (("chain", "draw", "datapoint", "latent"), z_np)},
            coords={"chain": [0], "draw": np.arange(draws), **coords},
        ),
        sample_stats=xr.Dataset(
            {
                "log_weight": (("chain", "draw", "datapoint"), lw_np),
                "pareto_k": (("datapoint",), khat),
            },
            coords={"chain": [0], "draw": np.arange(draws), "datapoint": coords["datapoint"]},
        ),
        posterior_predictive=xr.Dataset(
            {"mean_intensity": (("chain", "draw", "datapoint"), replicated[None])},
            coords={
                "chain": [0],
                "draw": np.arange(replicated.shape[0]),
                "datapoint": np.arange(n),
            },
        ),
        observed_data=xr.Dataset(observed_data, coords={"datapoint": np.arange(n)}),
    )
    # Every file is written at the end, each whole, so that a failure or Ctrl-C on the
    # way (NUTS takes the longest) leaves the previous report as it was.
    netcdfs = {"netcdf": (out / REPORT_NETCDF, idata)}

    sections = [
        (
            "PSIS diagnostic of q(z|x)",
            f"<p>{draws} draws per point from q(z|x), log ratios log p(x,z) - log q(z|x); "
            "Pareto k̂ by <code>az.psislw</code> (Yao et al. 2018). Shares: "
            f"good (k̂ &lt; 0.5) {shares['good']:.0%}, usable (0.5-0.7) {shares['usable']:.0%}, "
            f"bad (&gt; 0.7) {shares['bad']:.0%}.</p>"
            + (
                f"<p>{shares['exact']:.0%} of points have ratios equal up to round-off: "
                "q(z|x) is their posterior, IS is exact and there is no tail (drawn at "
                "k̂ = 0, listed as exact).</p>"
                if shares["exact"]
                else ""
            )
            + _img(_plot_khat(np.nan_to_num(khat, nan=0.0)))
            + _html_table(
                [
                    {"datapoint": i, "k̂": "exact" if math.isnan(k) else float(k)}
                    for i, k in enumerate(khat)
                ],
                ["datapoint", "k̂"],
            ),
        )
    ]

    nuts_summary = None
    if nuts:
        reference = nuts_reference(
            vae, x[:nuts], chains=chains, draws=nuts_draws, warmup=nuts_warmup, progress=progress
        )
        netcdfs["nuts_netcdf"] = (out / REPORT_NUTS_NETCDF, reference.inference_data())
        q_sub = z_np[0, :, :nuts]  # (draws, nuts, L)
        w2 = [
            gaussian_w2(q_sub[:, i], reference.draws[:, :, i].reshape(-1, vae.n_latent))
            for i in range(nuts)
        ]
        nuts_summary = {
            "points": nuts,
            "chains": chains,
            "draws": nuts_draws,
            "warmup": nuts_warmup,
            "max_r_hat": reference.max_r_hat,
            "min_ess_bulk": reference.min_ess_bulk,
            "w2": w2,
            "seconds": reference.seconds,
            "summary": reference.summary,
        }
        sections.append(
            (
                "NUTS reference posterior",
                f"<p>p(z|x) with the decoder fixed, {chains} chains x {nuts_draws} draws "
                f"({nuts_warmup} warm-up) of Pyro's NUTS for the first {nuts} points; "
                f"max R-hat {reference.max_r_hat:.3f}, min bulk ESS "
                f"{reference.min_ess_bulk:.0f}. Distance to q: 2-Wasserstein between "
                "Gaussian fits over all latent units, per point: "
                + ", ".join(f"{d:.3f}" for d in w2)
                + f". Marginals of the first {min(4, vae.n_latent)} latent units below.</p>"
                + _img(_plot_overlay(q_sub, reference.draws))
                + _html_table(
                    reference.summary, ["variable", "mean", "sd", "r_hat", "ess_bulk", "ess_tail"]
                ),
            )
        )

    sections.append(
        (
            "Posterior predictive check",
            "<p>Per-image mean intensity of x ~ p(x|z), z ~ q(z|x), against the observed "
            f"images: {ppc['outside_95']:.0%} of images fall outside their central 95% "
            "predictive interval.</p>" + _img(_plot_ppc(idata)),
        )
    )

    with torch.no_grad():
        m = min(latent_points, images.shape[0])
        starts = progress_bar(range(0, m, 500), "latent codes", progress, unit="batch")
        means = torch.cat(
            [
                posterior_mean(vae.qz(to_unit_float(images[i : min(i + 500, m)].to(device))))
                for i in starts
            ]
        )
        prior_draws = vae.prior.sample(2000).cpu().numpy()
    latent_png, axes_note = _plot_latent(
        means.cpu().numpy(), None if labels is None else labels[:m].cpu().numpy(), prior_draws
    )
    sections.append(
        (
            "Latent space",
            f"<p>E_q[z|x] of {m} images, {axes_note}, over the prior's density (grey, "
            "a kernel estimate from its draws).</p>" + _img(latent_png),
        )
    )

    paths = {name: str(path) for name, (path, _) in netcdfs.items()}
    paths["html"] = str(out / REPORT_HTML)
    paths["json"] = str(out / REPORT_JSON)
    for path, data in netcdfs.values():
        atomic_write_via_name(path, data.to_netcdf)
    page = _html(title, sections)
    atomic_write_text(out / REPORT_HTML, page)
    result = DiagnosisResult(
        n=n,
        draws=draws,
        khat=[None if math.isnan(k) else float(k) for k in khat],
        khat_shares=shares,
        nuts=nuts_summary,
        ppc=ppc,
        seconds=time.perf_counter() - started,
        paths=paths,
    )
    text = json.dumps(result.to_dict(), indent=2) + "\n"
    atomic_write_text(out / REPORT_JSON, text)
    return result


def diagnose_run(
    run_dir: str | Path | None = None,
    *,
    out: str | Path | None = None,
    split: str = "test",
    n: int = 100,
    draws: int = 1000,
    nuts: int = 4,
    nuts_draws: int = 200,
    chains: int = 4,
    device: str = "auto",
    seed: int | None = 0,
    progress: bool = False,
) -> DiagnosisResult:
    """:func:`diagnose` on a trained run's ``split``; ``out`` defaults to ``RUN/diagnostics``.

    The images are those :func:`pyrovae.training.split_images` prepares.
    ``seed`` seeds the draws without changing the caller's RNG state.
    """
    from pyrovae.api import load_run
    from pyrovae.training import split_images

    if split not in ("test", "train"):
        raise ConfigError(f"--split must be test or train, got {split!r}")
    with restored_rng(device, active=seed is not None):
        run = load_run(run_dir, device=device)
        images, labels = split_images(run.config, run.data(), split)
        if seed is not None:
            torch.manual_seed(seed)
        return diagnose(
            run.vae,
            images,
            out if out is not None else run.run_dir / "diagnostics",
            labels=labels,
            n=n,
            draws=draws,
            nuts=nuts,
            nuts_draws=nuts_draws,
            nuts_warmup=nuts_draws,
            chains=chains,
            title=f"pyrovae diagnostics: {run.run_dir}",
            progress=progress,
        )
