"""``pyrovae diagnose``: can q(z|x) be trusted? Posterior diagnostics with ArviZ.

PSIS k̂ of q(z|x) as importance proposal (:mod:`pyrovae.inference.psis`), a
NUTS reference posterior with the decoder fixed (:mod:`pyrovae.inference.nuts`),
a posterior predictive check (:func:`arviz.plot_ppc`), and the aggregate
posterior in latent space. Everything lands in an ArviZ ``InferenceData``
(dims ``chain``, ``draw``, ``datapoint``, ``latent``), a JSON summary and one
self-contained HTML page.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from pyrovae.data.pixels import to_unit_float
from pyrovae.errors import ConfigError
from pyrovae.files import atomic_write_text, atomic_write_via_name, check_output_folder
from pyrovae.inference.importance import auto_chunk_size
from pyrovae.inference.latent import posterior_mean
from pyrovae.inference.nuts import (
    R_HAT_OK,
    NutsReference,
    gaussian_w2,
    latent_coords,
    nuts_reference,
)
from pyrovae.inference.psis import khat_shares, psis_khat, roundoff_tolerance
from pyrovae.model.vae import VAE
from pyrovae.reports.diagnostic_plots import plot_khat, plot_latent, plot_overlay, plot_ppc
from pyrovae.reports.evaluate import json_safe
from pyrovae.reports.html import embedded_image, html_page, html_table
from pyrovae.runtime import eval_mode, module_device, progress_bar
from pyrovae.sites import LATENT

if TYPE_CHECKING:
    import arviz as az


REPORT_HTML = "diagnostics.html"

REPORT_NETCDF = "diagnostics.nc"

REPORT_NUTS_NETCDF = "nuts_reference.nc"

REPORT_JSON = "diagnostics.json"


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
def q_draws(
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
        joints.append(vae64.log_joint(x64, z))  # (chunk, n)
        zs.append(z)
    log_joint, log_r = torch.cat(joints), torch.cat(densities)
    tolerance = roundoff_tolerance(log_joint, log_r, precision)
    return torch.cat(zs).to(precision), log_joint - log_r, tolerance


@dataclass
class _PsisDraws:
    """Draws of q(z|x) as importance proposal and their Pareto k̂ per point."""

    z: torch.Tensor  # (draws, n, L)
    log_w: torch.Tensor  # (draws, n)
    khat: np.ndarray  # (n,), NaN where the ratios are exact
    shares: dict[str, float]


@dataclass
class _PredictiveCheck:
    """Per-image mean intensity, observed ``(n,)`` and replicated ``(draws, n)``."""

    observed: np.ndarray
    replicated: np.ndarray
    summary: dict[str, float]


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
    if n < 1 or draws < 10:
        raise ConfigError("diagnose needs -n >= 1 and --draws >= 10")
    if nuts < 0 or nuts > n:
        raise ConfigError(f"--nuts must be between 0 and -n ({n}), got {nuts}")
    started = time.perf_counter()
    out = check_output_folder(out)
    n = min(n, images.shape[0])
    nuts = min(nuts, n)
    x = to_unit_float(images[:n].to(module_device(vae)))  # (n, C, H, W)
    with eval_mode(vae):
        psis = _psis_draws(vae, x, draws, progress)
        ppc = _predictive_check(vae, x, psis.z[:ppc_draws])
        idata = _inference_data(x, labels, psis, ppc, vae.n_latent)
        # Every file is written at the end, each whole, so that a failure or Ctrl-C on the
        # way (NUTS takes the longest) leaves the previous report as it was.
        netcdfs = {"netcdf": (out / REPORT_NETCDF, idata)}
        sections = [_psis_section(draws, psis)]
        nuts_summary = None
        if nuts:
            reference = nuts_reference(
                vae,
                x[:nuts],
                chains=chains,
                draws=nuts_draws,
                warmup=nuts_warmup,
                progress=progress,
            )
            netcdfs["nuts_netcdf"] = (out / REPORT_NUTS_NETCDF, reference.inference_data())
            nuts_summary, section = _nuts_comparison(psis.z, reference, nuts_warmup)
            sections.append(section)
        sections.append(_ppc_section(ppc, idata))
        sections.append(_latent_section(vae, images, labels, latent_points, progress))
    paths = _write_report(out, title, sections, netcdfs)
    result = DiagnosisResult(
        n=n,
        draws=draws,
        khat=[None if math.isnan(k) else float(k) for k in psis.khat],
        khat_shares=psis.shares,
        nuts=nuts_summary,
        ppc=ppc.summary,
        seconds=time.perf_counter() - started,
        paths=paths,
    )
    text = json.dumps(result.to_dict(), indent=2) + "\n"
    atomic_write_text(out / REPORT_JSON, text)
    return result


def _psis_draws(vae: VAE, x: torch.Tensor, draws: int, progress: bool) -> _PsisDraws:
    z, log_w, roundoff = q_draws(vae, x, draws, progress)  # (draws, n, L), (draws, n), (n,)
    khat = psis_khat(log_w, roundoff)
    return _PsisDraws(z, log_w, khat, khat_shares(khat))


@torch.no_grad()
def _predictive_check(vae: VAE, x: torch.Tensor, z: torch.Tensor) -> _PredictiveCheck:
    """Replicated images x ~ p(x|z) at the codes ``z`` ``(draws, n, L)``, summarized by
    their mean intensity."""
    samples = vae.px(z).sample()  # (draws, n, *data_shape)
    seen = ~torch.isnan(x)
    if bool(seen.all()):
        replicated = samples.flatten(-3).mean(-1).cpu().numpy()  # (draws, n)
        observed = x.flatten(1).mean(-1).cpu().numpy()  # (n,)
    else:  # incomplete data: both means over each image's observed values
        count = seen.flatten(1).sum(-1)  # (n,)
        replicated = (torch.where(seen, samples, 0.0).flatten(-3).sum(-1) / count).cpu().numpy()
        observed = (torch.where(seen, x, 0.0).flatten(1).sum(-1) / count).cpu().numpy()
    return _PredictiveCheck(
        observed, replicated, posterior_predictive_summary(observed, replicated)
    )


def _inference_data(
    x: torch.Tensor,
    labels: torch.Tensor | None,
    psis: _PsisDraws,
    ppc: _PredictiveCheck,
    n_latent: int,
) -> az.InferenceData:
    """The draws of q(z|x), their log weights and k̂, the replicated and observed data."""
    import arviz as az
    import xarray as xr

    n, draws = x.shape[0], psis.z.shape[0]
    coords = latent_coords(n, n_latent)
    z_np = psis.z.cpu().numpy()[None]  # (chain=1, draw, datapoint, latent)
    lw_np = psis.log_w.double().cpu().numpy()[None]  # (1, draw, datapoint)
    observed_data = {
        "x": (("datapoint", "channel", "height", "width"), x.cpu().numpy()),
        "mean_intensity": (("datapoint",), ppc.observed),
    }
    if labels is not None:
        observed_data["label"] = (("datapoint",), labels[:n].cpu().numpy())
    return az.InferenceData(
        posterior=xr.Dataset(
            {LATENT: (("chain", "draw", "datapoint", "latent"), z_np)},
            coords={"chain": [0], "draw": np.arange(draws), **coords},
        ),
        sample_stats=xr.Dataset(
            {
                "log_weight": (("chain", "draw", "datapoint"), lw_np),
                "pareto_k": (("datapoint",), psis.khat),
            },
            coords={"chain": [0], "draw": np.arange(draws), "datapoint": coords["datapoint"]},
        ),
        posterior_predictive=xr.Dataset(
            {"mean_intensity": (("chain", "draw", "datapoint"), ppc.replicated[None])},
            coords={
                "chain": [0],
                "draw": np.arange(ppc.replicated.shape[0]),
                "datapoint": np.arange(n),
            },
        ),
        observed_data=xr.Dataset(observed_data, coords={"datapoint": np.arange(n)}),
    )


def _psis_section(draws: int, psis: _PsisDraws) -> tuple[str, str]:
    shares, khat = psis.shares, psis.khat
    exact = (
        f"<p>{shares['exact']:.0%} of points have ratios equal up to round-off: "
        "q(z|x) is their posterior, IS is exact and there is no tail (drawn at "
        "k̂ = 0, listed as exact).</p>"
        if shares["exact"]
        else ""
    )
    rows = [
        {"datapoint": i, "k̂": "exact" if math.isnan(k) else float(k)} for i, k in enumerate(khat)
    ]
    return (
        "PSIS diagnostic of q(z|x)",
        f"<p>{draws} draws per point from q(z|x), log ratios log p(x,z) - log q(z|x); "
        "Pareto k̂ by <code>az.psislw</code> (Yao et al. 2018). Shares: "
        f"good (k̂ &lt; 0.5) {shares['good']:.0%}, usable (0.5-0.7) {shares['usable']:.0%}, "
        f"bad (&gt; 0.7) {shares['bad']:.0%}.</p>"
        + exact
        + embedded_image(plot_khat(np.nan_to_num(khat, nan=0.0)))
        + html_table(rows, ["datapoint", "k̂"]),
    )


def _nuts_comparison(
    z: torch.Tensor, reference: NutsReference, warmup: int
) -> tuple[dict[str, Any], tuple[str, str]]:
    """The summary of the NUTS reference against the draws ``z`` ``(draws, n, L)`` of
    q(z|x), and its report section."""
    chains, nuts_draws, nuts, n_latent = reference.draws.shape
    q_sub = z.cpu().numpy()[:, :nuts]  # (draws, nuts, L)
    w2 = [
        gaussian_w2(q_sub[:, i], reference.draws[:, :, i].reshape(-1, n_latent))
        for i in range(nuts)
    ]
    summary = {
        "points": nuts,
        "chains": chains,
        "draws": nuts_draws,
        "warmup": warmup,
        "max_r_hat": reference.max_r_hat,
        "min_ess_bulk": reference.min_ess_bulk,
        "w2": w2,
        "seconds": reference.seconds,
        "summary": reference.summary,
    }
    section = (
        "NUTS reference posterior",
        f"<p>p(z|x) with the decoder fixed, {chains} chains x {nuts_draws} draws "
        f"({warmup} warm-up) of Pyro's NUTS for the first {nuts} points; "
        f"max R-hat {reference.max_r_hat:.3f}, min bulk ESS "
        f"{reference.min_ess_bulk:.0f}. Distance to q: 2-Wasserstein between "
        "Gaussian fits over all latent units, per point: "
        + ", ".join(f"{d:.3f}" for d in w2)
        + f". Marginals of the first {min(4, n_latent)} latent units below.</p>"
        + embedded_image(plot_overlay(q_sub, reference.draws))
        + html_table(
            reference.summary, ["variable", "mean", "sd", "r_hat", "ess_bulk", "ess_tail"]
        ),
    )
    return summary, section


def _ppc_section(ppc: _PredictiveCheck, idata: az.InferenceData) -> tuple[str, str]:
    return (
        "Posterior predictive check",
        "<p>Per-image mean intensity of x ~ p(x|z), z ~ q(z|x), against the observed "
        f"images: {ppc.summary['outside_95']:.0%} of images fall outside their central 95% "
        "predictive interval.</p>" + embedded_image(plot_ppc(idata)),
    )


@torch.no_grad()
def _latent_section(
    vae: VAE,
    images: torch.Tensor,
    labels: torch.Tensor | None,
    latent_points: int,
    progress: bool,
) -> tuple[str, str]:
    """E_q[z|x] of the first ``latent_points`` images over the prior's density."""
    device = module_device(vae)
    m = min(latent_points, images.shape[0])
    starts = progress_bar(range(0, m, 500), "latent codes", progress, unit="batch")
    means = torch.cat(
        [
            posterior_mean(vae.qz(to_unit_float(images[i : min(i + 500, m)].to(device))))
            for i in starts
        ]
    )
    prior_draws = vae.prior.sample(2000).cpu().numpy()
    latent_png, axes_note = plot_latent(
        means.cpu().numpy(), None if labels is None else labels[:m].cpu().numpy(), prior_draws
    )
    return (
        "Latent space",
        f"<p>E_q[z|x] of {m} images, {axes_note}, over the prior's density (grey, "
        "a kernel estimate from its draws).</p>" + embedded_image(latent_png),
    )


def _write_report(
    out: Path,
    title: str,
    sections: list[tuple[str, str]],
    netcdfs: dict[str, tuple[Path, az.InferenceData]],
) -> dict[str, str]:
    """Write the netCDF files and the HTML page; the paths of every file of the report,
    the JSON summary's (written last, by the caller) included."""
    paths = {name: str(path) for name, (path, _) in netcdfs.items()}
    paths["html"] = str(out / REPORT_HTML)
    paths["json"] = str(out / REPORT_JSON)
    for path, data in netcdfs.values():
        atomic_write_via_name(path, data.to_netcdf)
    atomic_write_text(out / REPORT_HTML, html_page(title, sections))
    return paths
