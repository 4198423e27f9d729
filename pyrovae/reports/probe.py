"""A linear probe of the latent features: how much of the class a linear classifier
reads off E_q[z|x], with few labels and with all of them.

The same classifier (scikit-learn's ``LogisticRegression`` on standardized
features) is fitted on the VAE's posterior means, on the raw pixels and on the
same number of principal components of the pixels, each with class-balanced
subsets of the training labels (Kingma et al. 2014, "Semi-Supervised Learning
with Deep Generative Models": M1 features with a classifier on top). The
encoder and PCA are fitted without labels on the whole training split; only the
classifier sees the labelled subset. Test accuracies carry their binomial
standard error sqrt(p (1 - p) / n_test).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pyrovae.data.pixels import to_unit_float
from pyrovae.errors import ConfigError, DataError, check_count
from pyrovae.files import atomic_write
from pyrovae.inference.moments import DEFAULT_DRAWS
from pyrovae.model.vae import VAE
from pyrovae.reports.encode import encode_points
from pyrovae.reports.style import in_style

#: Numbers of labels the probe is fitted with by default; ``None`` is all of them.
LABEL_COUNTS: tuple[int | None, ...] = (100, 1000, None)

#: Iterations of the classifier's solver (lbfgs) before it stops unconverged.
MAX_ITER = 1000

#: The three kinds of features, in table order.
FEATURES = ("latent", "pixels", "pca")


@dataclass
class ProbeRow:
    """The test accuracy of one classifier: ``features`` with ``n_labels`` labels."""

    features: str
    n_labels: int
    accuracy: float
    standard_error: float
    converged: bool = True


@dataclass
class ProbeResult:
    """Test accuracies of the probe, with what they were measured on."""

    rows: list[ProbeRow]
    n_train: int
    n_test: int
    dims: dict[str, int]
    seed: int
    encoding: str
    skipped: list[int] = field(default_factory=list)

    def label_counts(self) -> list[int]:
        return sorted({row.n_labels for row in self.rows})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def format_table(self) -> str:
        """Rows of features, columns of label counts: accuracy ± standard error."""
        counts = self.label_counts()
        heads = [f"{n} labels" if n < self.n_train else f"all {n}" for n in counts]
        lines = [
            f"test accuracy ± binomial standard error on {self.n_test} test points "
            f"(logistic regression; posterior means: {self.encoding})",
            f"{'features':<24}" + "".join(f"{head:>18}" for head in heads),
        ]
        for kind in FEATURES:
            cells = {row.n_labels: row for row in self.rows if row.features == kind}
            text = "".join(f"{_cell(cells.get(n)):>18}" for n in counts)
            lines.append(f"{feature_label(kind, self.dims[kind]):<24}{text}")
        if self.skipped:
            lines.append(f"skipped (more than the {self.n_train} training labels): {self.skipped}")
        if not all(row.converged for row in self.rows):
            lines.append(f"* the solver stopped after {MAX_ITER} iterations before converging")
        return "\n".join(lines)


def feature_label(kind: str, dim: int) -> str:
    return {"latent": "VAE mean E_q[z|x]", "pixels": "raw pixels", "pca": "PCA of pixels"}[
        kind
    ] + f" ({dim}-D)"


def _cell(row: ProbeRow | None) -> str:
    if row is None:
        return "-"
    star = "" if row.converged else "*"
    return f"{row.accuracy:.3f} ± {row.standard_error:.3f}{star}"


def balanced_subset(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Indices of ``n`` points, as evenly spread over the classes as they allow, seeded.

    Classes take turns (in a seeded order), each giving its next point of a
    seeded permutation, so counts differ by at most one between classes that
    have enough points.
    """
    rng = np.random.default_rng(seed)
    classes = rng.permutation(np.unique(labels))
    pools = [rng.permutation(np.flatnonzero(labels == c)) for c in classes]
    longest = max(len(pool) for pool in pools)
    taken = [pool[rank] for rank in range(longest) for pool in pools if rank < len(pool)]
    return np.sort(np.asarray(taken[:n], dtype=np.int64))


def fit_accuracy(
    train: np.ndarray, train_labels: np.ndarray, test: np.ndarray, test_labels: np.ndarray
) -> tuple[float, float, bool]:
    """Test accuracy of standardized logistic regression, its standard error, convergence."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    if len(np.unique(train_labels)) < 2:
        raise DataError("the labelled subset holds one class only: a classifier needs two")
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=MAX_ITER))
    # BLAS threads as many as torch's (--threads): on a busy machine more spin idle.
    with warnings.catch_warnings(), threadpool_limits(torch.get_num_threads()):
        warnings.simplefilter("ignore", ConvergenceWarning)  # reported in the table instead
        classifier.fit(train, train_labels)
    accuracy = float((classifier.predict(test) == test_labels).mean())
    converged = bool(np.all(classifier[-1].n_iter_ < MAX_ITER))
    return accuracy, math.sqrt(accuracy * (1 - accuracy) / len(test_labels)), converged


def probe_features(
    train: dict[str, np.ndarray],
    train_labels: np.ndarray,
    test: dict[str, np.ndarray],
    test_labels: np.ndarray,
    *,
    counts: Sequence[int | None] = LABEL_COUNTS,
    seed: int = 0,
    encoding: str = "closed form",
) -> ProbeResult:
    """Fit the classifier on each kind of features with each number of labels."""
    n_train = len(train_labels)
    if isinstance(counts, (str, bytes)) or not isinstance(counts, Iterable):
        raise ConfigError(f"label counts must be a list of whole numbers, got {counts!r}")
    counts = list(counts)  # a tuple, a set, a NumPy array
    wanted = sorted({n_train if n is None else check_count(n, "a label count", 2) for n in counts})
    if not wanted:
        raise ConfigError("label counts must hold at least one count, got none")
    n_classes = len(np.unique(train_labels))
    few = [n for n in wanted if n < n_classes]
    if few:
        warnings.warn(
            f"with {few[0]} labels the classifier sees {few[0]} of the {n_classes} classes, so "
            f"its accuracy is at most about {few[0] / n_classes:.2f}; give at least "
            f"{n_classes} labels",
            UserWarning,
            stacklevel=2,
        )
    if min(wanted) > n_train:
        raise ConfigError(
            f"every label count ({', '.join(map(str, wanted))}) is more than the {n_train} "
            "training labels: nothing to fit"
        )
    rows = []
    for n in (n for n in wanted if n <= n_train):
        index = balanced_subset(train_labels, n, seed)
        for kind in FEATURES:
            accuracy, se, converged = fit_accuracy(
                train[kind][index], train_labels[index], test[kind], test_labels
            )
            rows.append(ProbeRow(kind, n, accuracy, se, converged))
    dims = {kind: int(train[kind].shape[1]) for kind in FEATURES}
    skipped = [n for n in wanted if n > n_train]
    return ProbeResult(rows, n_train, len(test_labels), dims, seed, encoding, skipped)


def linear_probe(
    vae: VAE,
    train: tuple[torch.Tensor, torch.Tensor | None],
    test: tuple[torch.Tensor, torch.Tensor | None],
    *,
    counts: Sequence[int | None] = LABEL_COUNTS,
    seed: int = 0,
    draws: int = DEFAULT_DRAWS,
    progress: bool = False,
) -> ProbeResult:
    """The probe of ``vae``'s posterior means against pixels and PCA, on ``(points,
    labels)`` of a training and a test split; the PCA has ``n_latent`` components.
    Points labelled -1 (unlabelled) are encoded but neither fitted nor scored."""
    from sklearn.decomposition import PCA

    (train_x, train_y), (test_x, test_y) = train, test
    if train_y is None or test_y is None:
        raise DataError(
            "the probe needs class labels, and this data set has none: "
            "train on a labelled set (digits, mnist, fashion-mnist, or an .npz with 'y')"
        )
    features: list[dict[str, np.ndarray]] = []
    encodings = [encode_points(vae, x, draws=draws, progress=progress) for x in (train_x, test_x)]
    for x, encoded in zip((train_x, test_x), encodings, strict=True):
        pixels = to_unit_float(x).flatten(1).cpu().numpy()
        features.append({"latent": encoded.mean.numpy(), "pixels": pixels})
    n_components = min(vae.n_latent, *features[0]["pixels"].shape)
    pca = PCA(n_components=n_components, random_state=seed).fit(features[0]["pixels"])
    for part in features:
        part["pca"] = pca.transform(part["pixels"])
    # The encoder and the PCA see every point; the classifiers only the labelled ones
    # (-1 marks an unlabelled point, as --model m2 reads it).
    labelled = []
    for split, part, y in (("training", features[0], train_y), ("test", features[1], test_y)):
        keep = y.cpu().numpy() >= 0
        if not keep.any():
            raise DataError(
                f"the probe needs class labels, and the {split} split has none (all -1)"
            )
        labelled.append(
            ({kind: values[keep] for kind, values in part.items()}, y.cpu().numpy()[keep])
        )
    return probe_features(
        *labelled[0], *labelled[1], counts=counts, seed=seed, encoding=encodings[0].method
    )


@in_style
def save_probe_plot(result: ProbeResult, path: str | Path) -> Path:
    """Test accuracy against the number of labels (log scale), one line per kind of
    features, with ±1 standard error bars."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for kind in FEATURES:
        rows = sorted((r for r in result.rows if r.features == kind), key=lambda r: r.n_labels)
        ax.errorbar(
            [r.n_labels for r in rows],
            [r.accuracy for r in rows],
            yerr=[r.standard_error for r in rows],
            marker="o",
            capsize=3,
            label=feature_label(kind, result.dims[kind]),
        )
    ax.set_xscale("log")
    ax.set_xlabel("number of labelled training points (class-balanced)")
    ax.set_ylabel(f"test accuracy (n = {result.n_test}, ±1 s.e.)")
    ax.set_title("linear probe: logistic regression")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=100))
    return Path(path)
