"""The HTML page of ``pyrovae diagnose``, rendered from ``templates/diagnose.html``.

A one-sentence verdict first, every warning of the console, the run's metadata,
then short tables (the shares of points by k̂, the points with the highest k̂
beside their reconstructions, one row per NUTS point) and figures with labelled
axes, all embedded: the page is one file that reads on a phone.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from pyrovae.data.pixels import to_unit_float
from pyrovae.inference.latent import posterior_mean
from pyrovae.inference.nuts import R_HAT_OK
from pyrovae.inference.psis import KHAT_BAD, KHAT_GOOD
from pyrovae.model.vae import VAE
from pyrovae.reports.diagnostic_plots import plot_khat, plot_latent, plot_overlay, plot_ppc
from pyrovae.reports.html import image_png, render
from pyrovae.runtime import module_device, progress_bar


class Diagnosis(Protocol):
    """What the page shows of a :class:`pyrovae.reports.diagnose.DiagnosisResult`."""

    n: int
    draws: int
    khat: list[float | None]
    khat_shares: dict[str, float]
    nuts: dict[str, Any] | None
    ppc: dict[str, float]
    seconds: float
    paths: dict[str, str]

    @property
    def trust(self) -> str: ...

    @property
    def verdict(self) -> str: ...

    @property
    def warnings(self) -> list[str]: ...


#: Rows of the table of the points with the highest k̂.
WORST_POINTS = 10


@dataclass
class Figures:
    """The page's figures (base64 PNGs) and the rows of the table of worst points."""

    khat: str
    worst: list[dict[str, Any]]
    overlay: str | None
    ppc: str
    latent: str
    latent_axes: str
    latent_points: int
    classes: list[str]  # of the diagnosed points ("" without labels)


@dataclass
class PageInputs:
    """What the figures are drawn from: ``x`` ``(n, C, H, W)`` on [0, 1] the diagnosed
    points, ``images`` the split (for the latent space), ``khat`` ``(n,)``, the
    mean intensities ``ppc_observed`` ``(n,)`` and ``ppc_replicated`` ``(draws, n)``,
    ``q_z`` ``(draws, n, L)`` and ``nuts_draws`` ``(chain, draw, M, L)`` or ``None``."""

    vae: VAE
    x: torch.Tensor
    images: torch.Tensor
    labels: torch.Tensor | None
    class_names: list[str] | None
    khat: np.ndarray
    ppc_observed: np.ndarray
    ppc_replicated: np.ndarray
    q_z: torch.Tensor
    nuts_draws: np.ndarray | None
    latent_points: int
    progress: bool

    def figures(self, stage: Callable[[str], None]) -> Figures:
        overlay = None
        if self.nuts_draws is not None:
            overlay = plot_overlay(self.q_z.cpu().numpy()[:, : self.nuts_draws.shape[2]],
                                   self.nuts_draws)  # fmt: skip
        stage(f"latent space: codes of up to {self.latent_points} images")
        latent, axes, points = self._latent()
        return Figures(
            khat=plot_khat(self.khat),
            worst=self._worst(),
            overlay=overlay,
            ppc=plot_ppc(_ppc_idata(self.ppc_observed, self.ppc_replicated)),
            latent=latent,
            latent_axes=axes,
            latent_points=points,
            classes=[self.class_of(i) for i in range(self.x.shape[0])],
        )

    def class_of(self, index: int) -> str:
        """Point ``index``'s class name (its label where the names are not known)."""
        if self.labels is None:
            return ""
        label = int(self.labels[index])
        names = self.class_names
        return names[label] if names is not None and 0 <= label < len(names) else str(label)

    @torch.no_grad()
    def _worst(self) -> list[dict[str, Any]]:
        """The :data:`WORST_POINTS` points with the highest k̂ (exact points last), with
        their images and reconstructions (the mean of p(x|z) at a draw of q(z|x))."""
        order = np.argsort(-np.nan_to_num(self.khat, nan=-np.inf), kind="stable")
        chosen = order[:WORST_POINTS]
        images = self.x.ndim == 4 and self.x.shape[1] in (1, 3)
        recon = None
        if images:
            recon = self.vae.reconstruct(self.x[torch.as_tensor(chosen)]).cpu().numpy()
        rows = []
        for row, i in enumerate(chosen):
            entry: dict[str, Any] = {"index": int(i), "khat": float(self.khat[i]),
                                     "label": self.class_of(int(i))}  # fmt: skip
            if recon is not None:
                entry["image"] = image_png(self.x[i].cpu().numpy())
                entry["reconstruction"] = image_png(recon[row])
            rows.append(entry)
        return rows

    @torch.no_grad()
    def _latent(self) -> tuple[str, str, int]:
        """E_q[z|x] of the first ``latent_points`` images over the prior's density."""
        device = module_device(self.vae)
        m = min(self.latent_points, self.images.shape[0])
        starts = progress_bar(range(0, m, 500), "latent codes", self.progress, unit="batch")
        means = torch.cat([
            posterior_mean(self.vae.qz(to_unit_float(self.images[i : min(i + 500, m)].to(device))))
            for i in starts
        ])  # fmt: skip
        prior_draws = self.vae.prior.sample(2000).cpu().numpy()
        labels = None if self.labels is None else self.labels[:m].cpu().numpy()
        png, axes = plot_latent(means.cpu().numpy(), labels, prior_draws, self.class_names)
        return png, axes, m


def _ppc_idata(observed: np.ndarray, replicated: np.ndarray) -> Any:
    """The report's check (mean intensity under q) as an ``InferenceData`` for
    :func:`arviz.plot_ppc`."""
    import arviz as az

    return az.from_dict(
        posterior_predictive={"mean_intensity": replicated[None]},
        observed_data={"mean_intensity": observed},
        dims={"mean_intensity": ["datapoint"]},
    )


def render_page(result: Diagnosis, figures: Figures, title: str, attrs: dict[str, str]) -> str:
    """The page of ``result``; ``attrs`` are the netCDF's attributes (run, config,
    versions, time)."""
    shares, n = result.khat_shares, result.n
    bands = (
        (f"< {KHAT_GOOD} (good)", shares["good"]),
        (f"{KHAT_GOOD}–{KHAT_BAD} (usable)", shares["usable"]),
        (f"> {KHAT_BAD} (bad)", shares["bad"]),
        ("exact (no tail)", shares["exact"]),
    )
    psis = {
        "draws": result.draws,
        "shares": [
            {"band": band, "count": round(share * n), "share": f"{share:.0%}"}
            for band, share in bands
        ],
        "figure": figures.khat,
        "worst": figures.worst,
        "has_labels": any(figures.classes),
        "has_images": bool(figures.worst) and "image" in figures.worst[0],
    }
    return render(
        "diagnose.html",
        title=title,
        trust=result.trust,
        verdict=result.verdict,
        warnings=result.warnings,
        metadata=_metadata(result, attrs),
        config=_config_text(attrs.get("config")),
        psis=psis,
        good=KHAT_GOOD,
        bad=KHAT_BAD,
        r_hat_ok=R_HAT_OK,
        nuts=_nuts_context(result.nuts, figures, result.khat),
        ppc=_ppc_context(result.ppc, figures.ppc),
        latent={
            "points": figures.latent_points,
            "axes": figures.latent_axes,
            "classes": psis["has_labels"],
            "figure": figures.latent,
        },  # fmt: skip
        files=list(result.paths.items()),
    )


def _metadata(result: Diagnosis, attrs: dict[str, str]) -> list[tuple[str, str]]:
    config = json.loads(attrs["config"]) if "config" in attrs else {}
    model = config.get("model", {})
    rows = [("run", attrs.get("run_dir", "(not from a run folder)"))]
    if config:
        rows.append(("data set", str(config.get("data", {}).get("dataset"))))
        rows.append((
            "model",
            f"{model.get('network')} network, {model.get('likelihood')} likelihood, "
            f"{model.get('guide')} guide, {model.get('prior')} prior, "
            f"{model.get('latent_dim')} latent units",
        ))  # fmt: skip
    if "weights" in attrs:
        what = "moving average of the" if attrs["weights"] == "average" else "trained"
        rows.append(("weights", f"the {what} weights of the {attrs.get('checkpoint')} "
                                f"checkpoint (epoch {attrs.get('epoch')})"))  # fmt: skip
    if "split" in attrs:
        rows.append(("diagnosed", f"the first {result.n} points of the {attrs['split']} split"))
    rows.append(("created", attrs["created_at"]))
    rows.append(("took", f"{result.seconds:.0f} s"))
    versions = (
        f"pyrovae {attrs['pyrovae_version']}, Pyro {attrs['pyro_version']}, "
        f"torch {attrs['torch_version']}, ArviZ {attrs['arviz_version']}"
    )
    rows.append(("versions", versions))
    return rows


def _config_text(config: str | None) -> str:
    return "" if config is None else json.dumps(json.loads(config), indent=2)


def _nuts_context(
    nuts: dict[str, Any] | None, figures: Figures, khat: list[float | None]
) -> dict[str, Any] | None:
    if nuts is None:
        return None
    rows = [
        {"index": i, "label": figures.classes[i], "w2": nuts["w2"][i],
         "size": nuts["posterior_size"][i], "khat": khat[i], "r_hat": nuts["point_r_hat"][i],
         "ess": nuts["point_ess_bulk"][i]}
        for i in range(nuts["points"])
    ]  # fmt: skip
    return {**nuts, "rows": rows, "figure": figures.overlay}


def plus_minus_share(stderr: float | None) -> str:
    """`` ± 3%`` for the standard error of a share, nothing where it is undefined (one
    image: it read "100% ± 0%")."""
    return "" if stderr is None or not math.isfinite(stderr) else f" ± {stderr:.0%}"


def _ppc_context(ppc: dict[str, float], figure: str) -> dict[str, Any]:
    outside = f"{ppc['outside_95']:.0%}{plus_minus_share(ppc['outside_95_stderr'])}"
    return {**ppc, "outside": outside, "figure": figure}
