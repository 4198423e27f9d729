"""Figures of the latent space of a trained VAE.

- ``interpolation.png``: decoded codes on the line between the posterior means of
  two test images, and for a Gaussian prior on the great circle between them
  (spherical interpolation, White 2016, "Sampling Generative Networks"), which
  keeps the codes at the radius where the prior puts its mass.
- ``traversal.png``: one latent dimension varied at a time from a test image's
  code, the most active dimensions first (ordered by their average KL from the
  prior where it is closed form per dimension, else by the variance of their
  posterior means, Burda et al. 2016).
- ``manifold.png``: decoded codes on a grid: of prior quantiles when the latent
  is 2-D (Kingma & Welling 2014, Fig. 4), else along the two leading principal
  directions of the test posterior means.
- ``latent_map.png``: the test posterior means in 2-D by PCA and by t-SNE
  (van der Maaten & Hinton 2008), coloured by class.

Every figure is a matplotlib ``Figure`` of its own (no pyplot state); image
grids are made with :func:`torchvision.utils.make_grid`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyro.distributions as dist
import torch
from torch.distributions import Distribution, kl_divergence

from pyrovae.data.dataset import is_image_shape
from pyrovae.data.pixels import display_range, display_values, to_unit_float
from pyrovae.errors import DataError
from pyrovae.files import atomic_write, check_output_folder
from pyrovae.inference.moments import DEFAULT_DRAWS
from pyrovae.model.vae import VAE
from pyrovae.reports.encode import Encoding, encode_points
from pyrovae.reports.style import in_style
from pyrovae.runtime import eval_mode, module_device

#: Test points needed at least: two to interpolate, four for a t-SNE map.
MIN_POINTS = 4
#: Points of the t-SNE map at most (its cost grows as n log n).
TSNE_POINTS = 2000
#: Pairs of test images interpolated, and codes between the two ends.
PAIRS, STEPS = 4, 10
#: Dimensions traversed at most, and values per dimension.
TRAVERSED, TRAVERSAL_STEPS = 8, 11
#: Codes per side of the manifold grid.
GRID_SIDE = 15
#: The prior quantiles, or standard deviations along a principal direction, spanned.
QUANTILE_RANGE, SD_RANGE = (0.05, 0.95), 2.0

Log = Callable[[str], None]


@dataclass
class ExploreResult:
    """The figures written, and how active each latent dimension is."""

    paths: list[Path]
    activity: list[float]
    activity_measure: str
    order: list[int]
    notes: list[str] = field(default_factory=list)


def diagonal_normal(d: Distribution) -> dist.Normal | None:
    """The Normal under an ``Independent`` Normal (a diagonal Gaussian), else ``None``."""
    while isinstance(d, dist.Independent):
        d = d.base_dist
    return d if isinstance(d, dist.Normal) else None


@torch.no_grad()
def activity(vae: VAE, x: torch.Tensor, encoding: Encoding) -> tuple[torch.Tensor, str]:
    """Per dimension: the average KL(q(z_d|x) || p(z_d)) over ``x`` where q and the prior
    are diagonal Gaussians, else the variance of the posterior means."""
    prior = diagonal_normal(vae.prior())
    device = module_device(vae)
    if prior is not None and vae.amortized_guide.head_class.has_closed_form_mean:
        total = torch.zeros(vae.n_latent, dtype=torch.float64)
        with eval_mode(vae):
            for start in range(0, x.shape[0], 256):
                qz = diagonal_normal(vae.qz(to_unit_float(x[start : start + 256].to(device))))
                if qz is None:
                    break
                total += kl_divergence(qz, prior).double().sum(0).cpu()  # (n_latent,)
            else:
                return total / x.shape[0], "average KL (nats)"
    return encoding.mean.double().var(0), "variance of posterior means"


def decode(vae: VAE, z: torch.Tensor) -> torch.Tensor:
    """The likelihood's mean E[x|z] for codes ``(n, n_latent)``, on the CPU."""
    with torch.no_grad(), eval_mode(vae):
        return vae.px(z.to(module_device(vae))).mean.float().cpu()


def slerp(z0: torch.Tensor, z1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of ``z0`` and ``z1`` ``(n_latent,)`` at ``t`` ``(steps,)``."""
    omega = torch.arccos((z0 @ z1 / (z0.norm() * z1.norm())).clamp(-1, 1))
    if float(omega) < 1e-6:  # parallel codes: the great circle is the line
        return torch.lerp(z0, z1, t[:, None])
    s = torch.sin(omega)
    return (torch.sin((1 - t) * omega) / s)[:, None] * z0 + (torch.sin(t * omega) / s)[:, None] * z1


def image_grid(
    ax: Any,
    images: torch.Tensor,
    ncol: int,
    row_labels: Sequence[str] = (),
    col_labels: Sequence[str] = (),
    value_range: Sequence[float] | None = None,
) -> None:
    """``images`` ``(rows * ncol, C, H, W)`` as one grid on ``ax``, rows and columns labelled;
    values drawn on [0, 1] or ``value_range`` (the data's, where they leave [0, 1])."""
    from torchvision.utils import make_grid

    pad = 2
    shown = display_values(images, value_range)
    grid = make_grid(shown, nrow=ncol, padding=pad, pad_value=1.0)
    ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
    height, width = images.shape[-2:]
    nrow = -(-images.shape[0] // ncol)
    ax.set_yticks([pad + r * (height + pad) + height / 2 for r in range(nrow)][: len(row_labels)])
    ax.set_yticklabels(list(row_labels))
    ax.set_xticks([pad + c * (width + pad) + width / 2 for c in range(ncol)][: len(col_labels)])
    ax.set_xticklabels(list(col_labels))
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)


def save_figure(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=100))
    return path


def interpolation_pairs(labels: torch.Tensor | None, n: int) -> list[tuple[int, int]]:
    """Up to :data:`PAIRS` pairs of test-point indices: the first point of class 0 with the
    first of class 1, 2 with 3, and so on where there are labels; else points 0-1, 2-3, ..."""
    if labels is None or len(torch.unique(labels)) < 2:
        return [(2 * k, 2 * k + 1) for k in range(min(PAIRS, n // 2))]
    classes = torch.unique(labels).tolist()
    first = [int((labels == c).nonzero()[0, 0]) for c in classes]
    return list(zip(first[0::2], first[1::2], strict=False))[:PAIRS]


def interpolation_figure(
    vae: VAE,
    x: torch.Tensor,
    means: torch.Tensor,
    labels: torch.Tensor | None = None,
    names: Sequence[str] | None = None,
    value_range: Sequence[float] | None = None,
) -> Any:
    """Rows of decoded codes between pairs of test images (of two classes where there
    are labels): linear, and spherical for a Gaussian prior (in the prior's
    standardized coordinates)."""
    from matplotlib.figure import Figure

    prior = diagonal_normal(vae.prior())
    t = torch.linspace(0, 1, STEPS)
    rows, row_labels = [], []
    for k, (i, j) in enumerate(interpolation_pairs(labels, x.shape[0])):
        ends = to_unit_float(x[[i, j]]).cpu()
        z0, z1 = means[i], means[j]
        pair = f"pair {k + 1}" if labels is None else _pair_name(labels, names, i, j)
        rows.append(torch.cat([ends[:1], decode(vae, torch.lerp(z0, z1, t[:, None])), ends[1:]]))
        row_labels.append(f"{pair}: linear")
        if prior is not None:
            loc, scale = prior.loc.cpu(), prior.scale.cpu()
            arc = slerp((z0 - loc) / scale, (z1 - loc) / scale, t) * scale + loc
            rows.append(torch.cat([ends[:1], decode(vae, arc), ends[1:]]))
            row_labels.append(f"{pair}: spherical")
    columns = ["x start"] + [f"{v:.2g}" for v in t.tolist()] + ["x end"]
    fig = Figure(figsize=(STEPS + 2, 0.9 * len(rows) + 1.2))
    ax = fig.subplots()
    image_grid(ax, torch.cat(rows), STEPS + 2, row_labels, columns, value_range)
    ax.set_xlabel("interpolation weight t between the posterior means of two test images")
    ax.set_title("interpolation in the latent space (decoded E[x|z])")
    return fig


def _pair_name(labels: torch.Tensor, names: Sequence[str] | None, i: int, j: int) -> str:
    def name(c: int) -> str:
        return names[c] if names is not None and 0 <= c < len(names) else str(c)

    return f"{name(int(labels[i]))} to {name(int(labels[j]))}"


def traversal_figure(
    vae: VAE,
    means: torch.Tensor,
    score: torch.Tensor,
    measure: str,
    order: list[int],
    value_range: Sequence[float] | None = None,
) -> Any:
    """Each row varies one dimension of the first test image's code over the 2nd to
    98th percentile of that dimension's test posterior means."""
    from matplotlib.figure import Figure

    shown = order[:TRAVERSED]
    levels = torch.linspace(0.02, 0.98, TRAVERSAL_STEPS)
    rows, labels = [], []
    for d in shown:
        values = torch.quantile(means[:, d].double(), levels.double()).float()
        codes = means[0].repeat(TRAVERSAL_STEPS, 1)
        codes[:, d] = values
        rows.append(decode(vae, codes))
        labels.append(f"z{d + 1}: {float(score[d]):.3g}")
    fig = Figure(figsize=(TRAVERSAL_STEPS, 0.9 * len(rows) + 1.3))
    ax = fig.subplots()
    percentiles = [f"{round(100 * v)}%" for v in levels.tolist()]
    image_grid(ax, torch.cat(rows), TRAVERSAL_STEPS, labels, percentiles, value_range)
    ax.set_xlabel("percentile of the dimension's test posterior means (others held at one code)")
    ax.set_ylabel(f"dimension: {measure}")
    ax.set_title("latent traversals, most active dimensions first")
    return fig


def manifold_codes(
    vae: VAE, means: torch.Tensor
) -> tuple[torch.Tensor, list[str], list[str], str, str]:
    """Codes ``(GRID_SIDE**2, n_latent)`` of the manifold grid, row by row from the top,
    with the tick labels and names of the two axes: the prior's quantiles for a 2-D
    latent space with a prior, else the two principal directions of the posterior means."""
    side = torch.linspace(-SD_RANGE, SD_RANGE, GRID_SIDE)
    if vae.n_latent == 2 and vae.has_prior:  # an autoencoder has no prior to take quantiles of
        levels = torch.linspace(*QUANTILE_RANGE, GRID_SIDE)
        axes = prior_quantiles(vae, levels)  # (GRID_SIDE, 2)
        first, second = axes[:, 0], axes[:, 1]
        codes = torch.stack(torch.meshgrid(first, second.flip(0), indexing="xy"), -1)
        ticks = [f"{v:.2f}" for v in levels.tolist()]
        return (
            codes.reshape(-1, 2),
            ticks,
            ticks[::-1],
            "z1 (prior quantile)",
            "z2 (prior quantile)",
        )
    centre = means.mean(0)
    _, singular, vh = torch.linalg.svd(means - centre, full_matrices=False)
    sd = singular[:2] / max(1, means.shape[0] - 1) ** 0.5
    a, b = torch.meshgrid(side, side.flip(0), indexing="xy")
    codes = centre + a[..., None] * sd[0] * vh[0] + b[..., None] * sd[1] * vh[1]
    ticks = [f"{round(v, 2) + 0.0:g}" for v in side.tolist()]  # + 0.0: no "-0"
    names = [f"principal direction {i} of the posterior means (SDs)" for i in (1, 2)]
    return codes.reshape(-1, vae.n_latent), ticks, ticks[::-1], names[0], names[1]


def prior_quantiles(vae: VAE, levels: torch.Tensor) -> torch.Tensor:
    """Marginal quantiles ``(len(levels), n_latent)`` of the prior: exact for a diagonal
    Gaussian, else from 20000 draws (their error is far below a grid step)."""
    with torch.no_grad():
        prior = diagonal_normal(vae.prior())
        if prior is not None:
            return prior.icdf(levels[:, None].to(prior.loc.device)).cpu()
        draws = vae.prior.sample(20_000).double().cpu()  # (20000, n_latent)
    return torch.quantile(draws, levels.double(), dim=0).float()


def manifold_figure(
    vae: VAE, means: torch.Tensor, value_range: Sequence[float] | None = None
) -> Any:
    from matplotlib.figure import Figure

    codes, xticks, yticks, xname, yname = manifold_codes(vae, means)
    fig = Figure(figsize=(9, 9.4))
    ax = fig.subplots()
    image_grid(ax, decode(vae, codes), GRID_SIDE, yticks, xticks, value_range)
    ax.tick_params(axis="x", labelrotation=90)
    ax.set_xlabel(xname)
    ax.set_ylabel(yname)
    ax.set_title("the learned manifold: E[x|z] on a grid of codes")
    return fig


def map_figure(
    means: torch.Tensor,
    labels: torch.Tensor | None,
    names: Sequence[str] | None,
    *,
    seed: int,
    tsne_points: int,
    log: Log,
) -> Any:
    """Test posterior means by PCA (all) and t-SNE (at most ``tsne_points``), by class."""
    from matplotlib.figure import Figure
    from sklearn.decomposition import PCA

    z = means.double().numpy()
    y = None if labels is None else labels.cpu().numpy()
    fig = Figure(figsize=(13, 6))
    left, right = fig.subplots(1, 2)
    _scatter(left, PCA(2, random_state=seed).fit_transform(z), y, names)
    left.set_xlabel("principal component 1")
    left.set_ylabel("principal component 2")
    left.set_title(f"PCA of {len(z)} test posterior means")
    keep = np.sort(np.random.default_rng(seed).permutation(len(z))[:tsne_points])
    _scatter(right, tsne(z[keep], seed, log), None if y is None else y[keep], names)
    right.set_xlabel("t-SNE 1")
    right.set_ylabel("t-SNE 2")
    right.set_title(f"t-SNE of {len(keep)} test posterior means")
    return fig


def tsne(z: np.ndarray, seed: int, log: Log) -> np.ndarray:
    """A 2-D t-SNE embedding of ``z``, with a line before and after (it is the slow part)."""
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    log(f"t-SNE of {len(z)} posterior means...")
    start = time.perf_counter()
    perplexity = float(max(2.0, min(30.0, (len(z) - 1) / 3)))
    # As many OpenMP threads as torch's (--threads): on a busy machine more spin idle.
    with threadpool_limits(torch.get_num_threads()):
        embedded = TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(z)
    log(f"t-SNE done in {time.perf_counter() - start:.1f} s")
    return np.asarray(embedded)


def _scatter(
    ax: Any, points: np.ndarray, y: np.ndarray | None, names: Sequence[str] | None
) -> None:
    if y is None:
        ax.scatter(points[:, 0], points[:, 1], s=6, alpha=0.6)
        return
    cmap = _colours(int(y.max()) + 1)
    for c in np.unique(y):
        at = y == c
        name = names[c] if names is not None and 0 <= c < len(names) else str(c)
        ax.scatter(points[at, 0], points[at, 1], s=6, alpha=0.7, color=cmap(int(c)), label=name)
    ax.legend(markerscale=3, fontsize=8, title="class", loc="best")


def _colours(n: int) -> Any:
    from matplotlib import colormaps

    return colormaps["tab10" if n <= 10 else "tab20"]


@in_style
def write_latent_figures(
    vae: VAE,
    x: torch.Tensor,
    labels: torch.Tensor | None,
    out: str | os.PathLike[str],
    *,
    class_names: Sequence[str] | None = None,
    tsne_points: int = TSNE_POINTS,
    draws: int = DEFAULT_DRAWS,
    seed: int = 0,
    progress: bool = False,
    log: Log = print,
) -> ExploreResult:
    """Write the figures of the latent space of ``vae`` on test points ``x`` into ``out``."""
    if x.shape[0] < MIN_POINTS:
        raise DataError(
            f"exploring needs at least {MIN_POINTS} test points (pairs to interpolate, a map "
            f"to draw), got {x.shape[0]}"
        )
    folder = check_output_folder(out, create=False)  # made with the first figure
    encoding = encode_points(vae, x, labels, draws=draws, progress=progress)
    means = encoding.mean  # (n, n_latent)
    score, measure = activity(vae, x, encoding)
    order = [int(d) for d in torch.argsort(score, descending=True)]
    result = ExploreResult([], [float(s) for s in score], measure, order)
    figures: dict[str, Callable[[], Any]] = {}
    if is_image_shape(vae.data_shape):
        shown = display_range(x)  # data that leave [0, 1] are drawn on their range
        figures["interpolation.png"] = lambda: interpolation_figure(
            vae, x, means, labels, class_names, shown
        )
        figures["traversal.png"] = lambda: traversal_figure(
            vae, means, score, measure, order, shown
        )
        if vae.n_latent >= 2:
            figures["manifold.png"] = lambda: manifold_figure(vae, means, shown)
    else:
        result.notes.append(f"points of shape {vae.data_shape} are not images: no image grids")
    if vae.n_latent >= 2:
        figures["latent_map.png"] = lambda: map_figure(
            means, labels, class_names, seed=seed, tsne_points=tsne_points, log=log
        )
    else:
        result.notes.append("a 1-D latent space has no 2-D grid or map: see traversal.png")
    for name, draw in figures.items():
        result.paths.append(save_figure(draw(), folder / name))
    return result
