"""``pyrovae diagnose``: can q(z|x) be trusted? Posterior diagnostics with ArviZ.

PSIS k̂ of q(z|x) as importance proposal (:mod:`pyrovae.inference.psis`), a
NUTS reference posterior with the decoder fixed (:mod:`pyrovae.inference.nuts`),
a posterior predictive check (:func:`arviz.plot_ppc`), and the aggregate
posterior in latent space. It writes an ArviZ ``InferenceData`` that every
ArviZ function takes (:mod:`pyrovae.reports.diagnose_data`), a JSON summary
and one self-contained HTML page that opens with a one-sentence verdict
(:mod:`pyrovae.reports.diagnose_page`).
"""

from __future__ import annotations

import copy
import json
import math
import sys
import time
import warnings
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from pyrovae.data.pixels import to_unit_float
from pyrovae.errors import ConfigError, check_count
from pyrovae.files import atomic_write_text, atomic_write_via_name, check_output_folder
from pyrovae.inference.importance import auto_chunk_size
from pyrovae.inference.nuts import R_HAT_OK, NutsReference, gaussian_w2, nuts_reference
from pyrovae.inference.psis import (
    KHAT_BAD,
    KHAT_GOOD,
    MIN_PSIS_DRAWS,
    khat_shares,
    psis_khat,
    roundoff_tolerance,
)
from pyrovae.model.vae import VAE
from pyrovae.reports.diagnose_data import DiagnosisDraws, inference_data
from pyrovae.reports.diagnose_page import PageInputs, plus_minus_share, render_page
from pyrovae.reports.evaluate import json_safe
from pyrovae.runtime import eval_mode, module_device, progress_bar

if TYPE_CHECKING:
    import arviz as az


REPORT_HTML = "diagnostics.html"

REPORT_NETCDF = "diagnostics.nc"

REPORT_JSON = "diagnostics.json"

#: Up to this share of points with k̂ > 0.7, q(z|x) is trusted for most points
#: (the page lists the others); beyond it, not for the run.
MOSTLY_BAD_SHARE = 0.1

#: q(z|x) is close to the NUTS reference of a point when the 2-Wasserstein
#: distance between their Gaussian fits is below this share of the posterior's
#: size (the root of the trace of its covariance).
W2_CLOSE = 0.5


def verdict(n: int, shares: dict[str, float], nuts: dict[str, Any] | None) -> tuple[str, str]:
    """Whether q(z|x) can be trusted for a run (``"yes"``, ``"mostly"`` or ``"no"``) and
    the one sentence that says so, from the k̂ ``shares`` of ``n`` points and the
    NUTS comparison ``nuts`` (or ``None``).

    k̂ decides (none above 0.7: yes; up to :data:`MOSTLY_BAD_SHARE`: mostly; more:
    no); a converged NUTS reference that q is far from (:data:`W2_CLOSE`) turns
    a yes into a mostly, since a q wider than the posterior has a small k̂.
    """
    reliable, bad = shares["good"] + shares["exact"], shares["bad"]
    trust = "yes" if bad == 0 else "mostly" if bad <= MOSTLY_BAD_SHARE else "no"
    k_part = f"k̂ < {KHAT_GOOD} for {reliable:.0%} of {n} points and > {KHAT_BAD} for {bad:.0%}"
    if nuts is None:
        nuts_part = "no NUTS reference was run"
    elif not nuts["max_r_hat"] < R_HAT_OK:
        nuts_part = (
            f"the NUTS reference did not converge (max R-hat {nuts['max_r_hat']:.3f}), so it "
            "neither confirms nor refutes this"
        )
    else:
        relative = nuts.get("w2_relative") or [0.0]
        far = sum(r > W2_CLOSE for r in relative)
        points = f"{nuts['points']} point{'s' if nuts['points'] > 1 else ''}"
        if far:
            trust = "mostly" if trust == "yes" else trust
            nuts_part = (
                f"on {far} of the {points} with a NUTS reference q is far from it (W2 up to "
                f"{max(relative):.0%} of the posterior's size)"
            )
        else:
            nuts_part = (
                f"on the {points} with a NUTS reference q is close to it (W2 at most "
                f"{max(relative):.0%} of the posterior's size)"
            )
    opening = {
        "yes": "q(z|x) can be trusted for this run",
        "mostly": "q(z|x) can be trusted for most points of this run, not all",
        "no": "q(z|x) cannot be trusted for this run",
    }[trust]
    return trust, f"{opening}: {k_part}; {nuts_part}."


@dataclass
class DiagnosisResult:
    """What :func:`diagnose` measured and where it wrote it.

    ``inference_data`` is the ``InferenceData`` written to ``diagnostics.nc``
    (left out of :meth:`to_dict`); ``python_warnings`` the warnings raised on the
    way, shown on the page as on the console.
    """

    n: int
    draws: int
    khat: list[float | None]
    khat_shares: dict[str, float]
    nuts: dict[str, Any] | None
    ppc: dict[str, float]
    seconds: float
    paths: dict[str, str] = field(default_factory=dict)
    python_warnings: list[str] = field(default_factory=list)
    inference_data: az.InferenceData | None = field(default=None, repr=False, compare=False)

    @property
    def trust(self) -> str:
        """``"yes"``, ``"mostly"`` or ``"no"``: see :func:`verdict`."""
        return verdict(self.n, self.khat_shares, self.nuts)[0]

    @property
    def verdict(self) -> str:
        """One sentence: can q(z|x) be trusted for this run? See :func:`verdict`."""
        return verdict(self.n, self.khat_shares, self.nuts)[1]

    @property
    def warnings(self) -> list[str]:
        """Every warning the console shows (and the page)."""
        shown = []
        if self.nuts is not None and not self.nuts["max_r_hat"] < R_HAT_OK:
            shown.append(
                f"R-hat above {R_HAT_OK}: the NUTS chains disagree (a multimodal posterior "
                "or too few draws), so the reference and W2 are not to be trusted; try more "
                "--nuts-draws"
            )
        return shown + self.python_warnings

    def to_dict(self) -> dict[str, Any]:
        """The figures as plain JSON values (an undefined standard error is ``None``)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        del values["inference_data"]
        values.update(trust=self.trust, verdict=self.verdict, warnings=self.warnings)
        return json_safe(values)

    def format_summary(self) -> str:
        s = self.khat_shares
        finite = [k for k in self.khat if k is not None]
        worst = f"max k̂ {max(finite):.2f}" if finite else "no tail anywhere"
        exact = f", exact {s['exact']:.0%}" if s["exact"] else ""
        lines = [
            self.verdict,
            f"PSIS over {self.n} points x {self.draws} draws of q(z|x): "
            f"k̂ < {KHAT_GOOD} {s['good']:.0%}, {KHAT_GOOD}-{KHAT_BAD} {s['usable']:.0%}, "
            f"> {KHAT_BAD} {s['bad']:.0%}{exact} ({worst})",
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
        lines += [f"warning: {text}" for text in self.warnings]
        p = self.ppc
        lines.append(
            f"PPC on mean intensity: observed {p['observed_mean']:.4f}, replicated "
            f"{p['replicated_mean']:.4f} ± {p['replicated_mean_mc_stderr']:.4f}; "
            f"{p['outside_95']:.0%}{plus_minus_share(p['outside_95_stderr'])} of images outside "
            "their 95% predictive interval"
        )
        lines += [f"wrote {path}" for path in self.paths.values()]
        return "\n".join(lines)


def posterior_predictive_summary(observed: np.ndarray, replicated: np.ndarray) -> dict[str, float]:
    """The check's figures, with standard errors, from ``observed`` ``(n,)`` statistics and
    ``replicated`` ``(draws, n)`` ones.

    ``outside_95`` (share of images outside their central 95% predictive interval)
    has a binomial standard error over the n images (NaN for one image or a share of
    0 or 1, where that estimate is 0). An image is outside where
    its randomized PIT, (#{replicated < observed} + U (#{replicated = observed} + 1))
    / (draws + 1) with U uniform (seeded), is below 0.025 or above 0.975: for a
    model that fits, the PIT is exactly uniform, so the share is 5% in expectation
    for any number of replications and for discrete statistics (the interval
    between empirical 2.5% and 97.5% percentiles of 100 draws left out 6.8%).
    ``replicated_mean`` and ``p_value_mean`` (mean over images of
    P(replicated >= observed)) have Monte Carlo standard errors over the replications.
    """
    draws, n = replicated.shape
    below = np.sum(replicated < observed[None, :], axis=0)
    ties = np.sum(replicated == observed[None, :], axis=0)
    uniform = np.random.default_rng(0).uniform(size=n)
    pit = (below + uniform * (ties + 1)) / (draws + 1)
    outside = float(np.mean((pit < 0.025) | (pit > 0.975)))
    p_values = np.mean(replicated >= observed[None, :], axis=0)  # (n,)
    return {
        "observed_mean": float(observed.mean()),
        "replicated_mean": float(replicated.mean()),
        "replicated_mean_mc_stderr": float(replicated.mean(1).std(ddof=1) / math.sqrt(draws))
        if draws > 1
        else math.nan,
        "outside_95": outside,
        # Undefined for one image, and for a share of 0 or 1, where the binomial estimate
        # sqrt(p (1 - p) / n) is 0 whatever n: it read "100% ± 0%".
        "outside_95_stderr": math.sqrt(outside * (1 - outside) / n)
        if n > 1 and 0.0 < outside < 1.0
        else math.nan,
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


class _Stages:
    """One line on stderr as each step starts, with the time since the start, so that
    a long diagnosis is never silent (the tqdm bars inside a step show on a terminal
    only)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.started = time.perf_counter()

    def __call__(self, text: str) -> None:
        if self.enabled:
            elapsed = time.perf_counter() - self.started
            print(f"diagnose [{elapsed:6.1f} s] {text}", file=sys.stderr, flush=True)


def diagnose(
    vae: VAE,
    images: torch.Tensor,
    out: str | Path,
    *,
    labels: torch.Tensor | None = None,
    class_names: list[str] | None = None,
    n: int = 100,
    draws: int = 1000,
    nuts: int = 4,
    nuts_draws: int = 100,
    nuts_warmup: int = 100,
    chains: int = 4,
    ppc_draws: int = 100,
    latent_points: int = 2000,
    title: str = "pyrovae posterior diagnostics",
    metadata: dict[str, Any] | None = None,
    full_netcdf: bool = False,
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
    labels, class_names
        ``(N,)`` class labels, or ``None``; the names of the classes, by label.
    draws
        Draws of q(z|x) per point for PSIS.
    nuts
        Points (the first ones) with a NUTS reference; 0 skips NUTS (and the
        ``posterior``, ``log_likelihood`` and predictive groups of the netCDF).
    nuts_draws, nuts_warmup, chains
        NUTS draws and warm-up steps per chain, and the number of chains.
    ppc_draws
        Replicated data sets for the posterior predictive check.
    metadata
        ``run_dir`` and ``config`` (a dict) of the run, and anything else to
        record in the netCDF's attributes and on the page.
    full_netcdf
        Keep every draw and point in float64 in the netCDF
        (:mod:`pyrovae.reports.diagnose_data`); by default a compact subset.
    progress
        A line on stderr as each step starts, and progress bars for the PSIS
        draws, the NUTS chains and the latent codes.
    """
    if not vae.has_prior:
        raise ConfigError(
            "diagnose checks q(z|x) against the posterior p(z|x), which needs a prior; an "
            "autoencoder (--model ae) has none: use pyrovae evaluate --metrics elbo"
        )
    # Whole numbers (NUTS checks its own settings where it runs).
    n, draws = check_count(n, "n"), check_count(draws, "draws", MIN_PSIS_DRAWS)
    nuts, chains = check_count(nuts, "nuts", 0), check_count(chains, "chains")
    nuts_draws = check_count(nuts_draws, "nuts_draws")
    nuts_warmup, ppc_draws = (
        check_count(nuts_warmup, "nuts_warmup", 0),
        check_count(ppc_draws, "ppc_draws"),
    )
    if nuts > n:
        raise ConfigError(f"--nuts must be between 0 and -n ({n}), got {nuts}")
    out = check_output_folder(out, create=False)  # made when the report is written
    stage = _Stages(progress)
    n, nuts = min(n, images.shape[0]), min(nuts, n, images.shape[0])
    x = to_unit_float(images[:n].to(module_device(vae)))  # (n, C, H, W)
    attrs = _attributes(metadata or {})
    with eval_mode(vae), warnings.catch_warnings(record=True) as caught:
        stage(f"PSIS: {draws} draws of q(z|x) for each of {n} points")
        psis = _psis_draws(vae, x, draws, progress)
        ppc = _predictive_check(vae, x, psis.z[:ppc_draws])
        reference = None
        if nuts:
            stage(
                f"NUTS reference: {nuts} points, {chains} chains x ({nuts_warmup} warm-up + "
                f"{nuts_draws}) steps"
            )
            reference = nuts_reference(
                vae, x[:nuts], chains=chains, draws=nuts_draws, warmup=nuts_warmup,
                progress=progress,
            )  # fmt: skip
        nuts_summary = None if reference is None else _nuts_summary(psis.z, reference, nuts_warmup)
        labels_n = None if labels is None else labels[:n]
        draws_kept = DiagnosisDraws(
            x, psis.z, psis.log_w, psis.khat, labels_n,
            None if reference is None else reference.draws,
        )  # fmt: skip
        idata = inference_data(vae, draws_kept, attrs, full=full_netcdf)
        result = DiagnosisResult(
            n=n, draws=draws, khat=[None if math.isnan(k) else float(k) for k in psis.khat],
            khat_shares=psis.shares, nuts=nuts_summary, ppc=ppc.summary, seconds=0.0,
            paths=_paths(out), inference_data=idata,
        )  # fmt: skip
        stage("figures and the report")
        inputs = PageInputs(
            vae=vae, x=x, images=images, labels=labels, class_names=class_names,
            khat=psis.khat, ppc_observed=ppc.observed, ppc_replicated=ppc.replicated,
            q_z=psis.z, nuts_draws=None if reference is None else reference.draws,
            latent_points=latent_points, progress=progress,
        )  # fmt: skip
        page = _page(result, inputs, title, attrs, stage, caught)
    _pass_on(caught)
    result.seconds = time.perf_counter() - stage.started
    _write(out, idata, page, result)
    stage(f"done in {result.seconds:.0f} s")
    return result


def _page(
    result: DiagnosisResult,
    inputs: PageInputs,
    title: str,
    attrs: dict[str, str],
    stage: _Stages,
    caught: list[warnings.WarningMessage],
) -> str:
    """The HTML page, with the warnings raised until it is drawn."""
    figures = inputs.figures(stage)
    result.python_warnings = _unique_warnings(caught)
    result.seconds = time.perf_counter() - stage.started  # all but writing the files
    return render_page(result, figures, title, attrs)


def _unique_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    texts = [f"{w.category.__name__}: {w.message}" for w in caught]
    return list(dict.fromkeys(texts))


def _pass_on(caught: list[warnings.WarningMessage]) -> None:
    """Raise the recorded warnings again, for the console (they were kept for the page)."""
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)


def _attributes(metadata: dict[str, Any]) -> dict[str, str]:
    """Global attributes of the netCDF: versions, creation time, the run and its config."""
    import arviz as az
    import pyro

    attrs = {
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "pyrovae_version": _version("pyrovae"),
        "pyro_version": str(pyro.__version__),
        "torch_version": str(torch.__version__),  # a TorchVersion, which netCDF cannot hold
        "arviz_version": str(az.__version__),
        "inference_library": "pyro",
    }
    for key, value in metadata.items():
        attrs[key] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return attrs


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def _paths(out: Path) -> dict[str, str]:
    return {
        "netcdf": str(out / REPORT_NETCDF),
        "html": str(out / REPORT_HTML),
        "json": str(out / REPORT_JSON),
    }


def _write(out: Path, idata: az.InferenceData, page: str, result: DiagnosisResult) -> None:
    """Every file written at the end, each whole, so that a failure or Ctrl-C on the way
    (NUTS takes the longest) leaves the previous report as it was."""
    atomic_write_via_name(out / REPORT_NETCDF, idata.to_netcdf)
    atomic_write_text(out / REPORT_HTML, page)
    atomic_write_text(out / REPORT_JSON, json.dumps(result.to_dict(), indent=2) + "\n")


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
        replicated = samples.flatten(2).mean(-1).cpu().numpy()  # (draws, n)
        observed = x.flatten(1).mean(-1).cpu().numpy()  # (n,)
    else:  # incomplete data: both means over each image's observed values
        count = seen.flatten(1).sum(-1)  # (n,)
        replicated = (torch.where(seen, samples, 0.0).flatten(2).sum(-1) / count).cpu().numpy()
        observed = (torch.where(seen, x, 0.0).flatten(1).sum(-1) / count).cpu().numpy()
    return _PredictiveCheck(
        observed, replicated, posterior_predictive_summary(observed, replicated)
    )


def _nuts_summary(z: torch.Tensor, reference: NutsReference, warmup: int) -> dict[str, Any]:
    """The NUTS reference against the draws ``z`` ``(draws, n, L)`` of q(z|x): per point
    the 2-Wasserstein distance between Gaussian fits, the posterior's size (root of
    the trace of its covariance), the worst R-hat and bulk ESS."""
    chains, nuts_draws, nuts, n_latent = reference.draws.shape
    q_sub = z.cpu().numpy()[:, :nuts]  # (draws, nuts, L)
    pooled = [reference.draws[:, :, i].reshape(-1, n_latent) for i in range(nuts)]
    w2 = [gaussian_w2(q_sub[:, i], pooled[i]) for i in range(nuts)]
    size = [float(math.sqrt(np.trace(np.atleast_2d(np.cov(p, rowvar=False))))) for p in pooled]
    rows = reference.summary
    return {
        "points": nuts,
        "chains": chains,
        "draws": nuts_draws,
        "warmup": warmup,
        "max_r_hat": reference.max_r_hat,
        "min_ess_bulk": reference.min_ess_bulk,
        "w2": w2,
        "posterior_size": size,
        "w2_relative": [d / s if s > 0 else math.inf for d, s in zip(w2, size, strict=True)],
        "point_r_hat": [_worst(rows, i, "r_hat", max) for i in range(nuts)],
        "point_ess_bulk": [_worst(rows, i, "ess_bulk", min) for i in range(nuts)],
        "seconds": reference.seconds,
        "summary": reference.summary,
    }


def _worst(rows: list[dict[str, Any]], point: int, column: str, pick: Any) -> float:
    """The worst ``column`` of ``az.summary``'s rows ``z[point, u]`` over the units u."""
    prefix = f"[{point},"
    return float(pick(row[column] for row in rows if prefix in row["variable"]))
