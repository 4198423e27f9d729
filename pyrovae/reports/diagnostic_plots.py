"""The figures of ``pyrovae diagnose``: k̂ per point, q against NUTS, PPC, latent space."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from pyrovae.reports.html import figure_png, new_figure

if TYPE_CHECKING:
    import arviz as az


def plot_khat(khat: np.ndarray) -> str:
    import arviz as az

    fig = new_figure(figsize=(7, 3.5))
    ax = fig.subplots()
    with warnings.catch_warnings():
        # ArviZ would rather have an ELPDData; k̂ of importance ratios is a plain array.
        warnings.simplefilter("ignore", FutureWarning)
        az.plot_khat(khat, ax=ax, show_hlines=True, show_bins=True)
    ax.set_xlabel("data point")
    ax.set_title("PSIS Pareto k̂ of q(z|x) as importance proposal")
    return figure_png(fig)


def plot_overlay(q_draws: np.ndarray, nuts: np.ndarray, max_latent: int = 4) -> str:
    """Marginals of q(z|x) and NUTS: one row per data point, one column per latent."""
    import arviz as az

    n_points, n_latent = nuts.shape[2], min(nuts.shape[3], max_latent)
    fig = new_figure(figsize=(2.6 * n_latent, 2.0 * n_points))
    axes = fig.subplots(n_points, n_latent, squeeze=False)
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
    return figure_png(fig)


def plot_ppc(idata: az.InferenceData) -> str:
    import arviz as az

    fig = new_figure(figsize=(6, 3.5))
    ax = fig.subplots()
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
    return figure_png(fig)


def plot_latent(
    means: np.ndarray, labels: np.ndarray | None, prior_draws: np.ndarray
) -> tuple[str, str]:
    """Aggregate posterior means over the prior's density, in 2-D (PCA beyond 2 dims)."""
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

    fig = new_figure(figsize=(6, 5))
    ax = fig.subplots()
    lo, hi = np.percentile(np.concatenate([means, prior_draws]), [0.5, 99.5], axis=0)
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 80), np.linspace(lo[1], hi[1], 80))
    density = gaussian_kde(prior_draws.T)(np.stack([gx.ravel(), gy.ravel()])).reshape(gx.shape)
    ax.contourf(gx, gy, density, levels=10, cmap="Greys")
    colour: dict[str, Any] = {"c": "C0"} if labels is None else {"c": labels, "cmap": "tab10"}
    points = ax.scatter(means[:, 0], means[:, 1], s=6, **colour)
    if labels is not None:
        fig.colorbar(points, ax=ax, label="label")
    ax.set_title(f"aggregate posterior E_q[z|x] over p(z) (grey): {axes_note}", fontsize=9)
    return figure_png(fig), axes_note
