"""The figures of ``pyrovae diagnose``: k̂ per point, q against NUTS, PPC, latent space."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from pyrovae.inference.psis import KHAT_BAD, KHAT_GOOD
from pyrovae.reports.html import figure_png, new_figure
from pyrovae.reports.style import in_style

if TYPE_CHECKING:
    import arviz as az


@in_style
def plot_khat(khat: np.ndarray) -> str:
    """k̂ per point with the thresholds of the text (0.5 and 0.7) drawn and labelled;
    exact points (NaN) at 0 as open circles."""
    fig = new_figure(figsize=(7, 3.5))
    ax = fig.subplots()
    index = np.arange(khat.size)
    exact = np.isnan(khat)
    bands = (
        (~exact & (khat < KHAT_GOOD), "C2", f"good (k̂ < {KHAT_GOOD})"),
        (~exact & (khat >= KHAT_GOOD) & (khat <= KHAT_BAD), "C1", f"usable (to {KHAT_BAD})"),
        (~exact & (khat > KHAT_BAD), "C3", f"bad (k̂ > {KHAT_BAD})"),
    )
    for chosen, colour, label in bands:
        if chosen.any():
            ax.scatter(index[chosen], khat[chosen], s=12, color=colour, label=label)
    if exact.any():
        ax.scatter(index[exact], np.zeros(exact.sum()), s=12, facecolors="none",
                   edgecolors="C0", label="exact (no tail)")  # fmt: skip
    for level, style in ((KHAT_GOOD, "--"), (KHAT_BAD, "-.")):
        ax.axhline(level, color="grey", linestyle=style, linewidth=1)
        ax.annotate(f"{level}", (1.0, level), xycoords=("axes fraction", "data"),
                    xytext=(3, 0), textcoords="offset points", va="center", fontsize=8)  # fmt: skip
    ax.set_xlabel("data point (index in the diagnosed split)")
    ax.set_ylabel("Pareto k̂")
    ax.set_title("PSIS Pareto k̂ of q(z|x) as importance proposal")
    ax.legend(fontsize=8, loc="best")
    return figure_png(fig)


@in_style
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
            ax.set_xlabel(f"z[{u}]", fontsize=8)
            if u == 0:
                ax.set_ylabel("density", fontsize=8)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    return figure_png(fig)


@in_style
def plot_ppc(idata: az.InferenceData) -> str:
    import arviz as az

    fig = new_figure(figsize=(6, 3.5))
    ax = fig.subplots()
    n_draws = idata["posterior_predictive"].sizes["draw"]
    options = {"var_names": ["mean_intensity"], "num_pp_samples": min(50, n_draws)}
    observed = np.asarray(idata["observed_data"]["mean_intensity"]).ravel()
    if observed.size < 2:
        # One image: each replication is one value, which has no density (ArviZ warns
        # "Your data appears to have a single value") and draws no visible line. The
        # replications pooled over draws are its posterior predictive distribution.
        replicated = np.asarray(idata["posterior_predictive"]["mean_intensity"]).ravel()
        ax.hist(replicated, bins="auto", density=True, color="C0", alpha=0.6,
                label=f"replicated ({replicated.size} draws)")  # fmt: skip
        ax.axvline(float(observed[0]), color="black", label="observed")
        ax.legend(fontsize=8)
        return _ppc_labelled(ax, "density")
    try:
        az.plot_ppc(idata, ax=ax, random_seed=0, **options)
    except ValueError:
        # A replication whose images all share one value (few pixels, few images) has
        # no density estimate; empirical distribution functions have no such trouble.
        ax.clear()
        az.plot_ppc(idata, ax=ax, random_seed=0, kind="cumulative", **options)
        return _ppc_labelled(ax, "share of images at or below")
    return _ppc_labelled(ax, "density")


def _ppc_labelled(ax: Any, ylabel: str) -> str:
    """The PPC figure with its axes named, as PNG data."""
    ax.set_xlabel("per-image mean intensity")
    ax.set_ylabel(ylabel)
    return figure_png(ax.figure)


@in_style
def plot_latent(
    means: np.ndarray,
    labels: np.ndarray | None,
    prior_draws: np.ndarray,
    class_names: list[str] | None = None,
) -> tuple[str, str]:
    """Aggregate posterior means over the prior's density, in 2-D (PCA beyond 2 dims);
    points coloured by label, with a legend of ``class_names`` where given."""
    if means.shape[1] == 1:
        means = np.concatenate([means, np.zeros_like(means)], axis=1)
        # A spread second column (meaningless, as the plot says): on a line of zeros the
        # prior's kernel density estimate would be singular.
        spread = np.random.default_rng(0).standard_normal(prior_draws.shape)
        prior_draws = np.concatenate([prior_draws, spread], axis=1)
        axes_note = "z[0] (one latent unit)"
        axis_labels = ("z[0]", "(spread, no meaning)")
    elif means.shape[1] == 2:
        axes_note = "z[0], z[1]"
        axis_labels = ("z[0]", "z[1]")
    else:
        from sklearn.decomposition import PCA

        pca = PCA(n_components=2).fit(means)
        means, prior_draws = pca.transform(means), pca.transform(prior_draws)
        axes_note = "first two principal components of E_q[z|x]"
        axis_labels = ("principal component 1", "principal component 2")
    from scipy.stats import gaussian_kde

    fig = new_figure(figsize=(6, 5))
    ax = fig.subplots()
    lo, hi = np.percentile(np.concatenate([means, prior_draws]), [0.5, 99.5], axis=0)
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 80), np.linspace(lo[1], hi[1], 80))
    density = gaussian_kde(prior_draws.T)(np.stack([gx.ravel(), gy.ravel()])).reshape(gx.shape)
    ax.contourf(gx, gy, density, levels=10, cmap="Greys")
    if labels is None:
        ax.scatter(means[:, 0], means[:, 1], s=6, c="C0")
    else:
        _scatter_classes(ax, means, labels, class_names)
    ax.set_xlabel(axis_labels[0])
    ax.set_ylabel(axis_labels[1])
    ax.set_title(f"aggregate posterior E_q[z|x] over p(z) (grey): {axes_note}", fontsize=9)
    return figure_png(fig), axes_note


def _scatter_classes(
    ax: Any, means: np.ndarray, labels: np.ndarray, class_names: list[str] | None
) -> None:
    """One colour and legend entry per class (its name where known); a colour bar
    instead when there are too many classes for a legend."""
    classes = np.unique(labels)
    if classes.size > 20:
        points = ax.scatter(means[:, 0], means[:, 1], s=6, c=labels, cmap="viridis")
        ax.figure.colorbar(points, ax=ax, label="label")
        return
    for i, label in enumerate(classes):
        chosen = labels == label
        known = class_names is not None and 0 <= int(label) < len(class_names)
        name = class_names[int(label)] if known else str(label)  # type: ignore[index]
        ax.scatter(means[chosen, 0], means[chosen, 1], s=6, color=f"C{i % 10}", label=name)
    ax.legend(fontsize=7, markerscale=2, loc="center left", bbox_to_anchor=(1.0, 0.5))
