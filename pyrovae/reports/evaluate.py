"""``pyrovae evaluate``: how good a trained run is, every figure with its standard error.

Importance-sampled log p(x), ELBO terms, bits/dim, active units, ELBO
surgery and inference gaps, chosen with ``metrics``; a table for the
terminal and a JSON file.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch.distributions import kl_divergence

from pyrovae.data.pixels import to_unit_float
from pyrovae.errors import ConfigError
from pyrovae.inference.classification import Accuracy
from pyrovae.inference.gaps import GapsResult, inference_gaps
from pyrovae.inference.importance import (
    ImportanceEstimate,
    bits_per_dim,
    draw_flops,
    importance_all,
    index_batches,
    parse_memory_budget,
)
from pyrovae.inference.latent import ACTIVE_UNIT_THRESHOLD, unit_variances
from pyrovae.inference.objectives import average_elbo_terms
from pyrovae.inference.stats import mc_standard_error, standard_error
from pyrovae.inference.surgery import SURGERY_FLOPS, SurgeryResult, elbo_surgery
from pyrovae.model.conditional import LabelledVAE
from pyrovae.model.vae import VAE
from pyrovae.runtime import eval_mode, module_device, synchronize

__all__ = [
    "DEFAULT_K",
    "DEFAULT_METRICS",
    "DEFAULT_N",
    "METRICS",
    "METRIC_STEPS",
    "EvaluationResult",
    "default_k",
    "evaluate",
    "negative_kl_warnings",
    "parse_memory_budget",
    "parse_metrics",
]

#: What :func:`evaluate` can compute, by ``--metrics`` name.
METRICS: tuple[str, ...] = ("logpx", "elbo", "active", "surgery", "gaps")

#: Computed unless asked otherwise: all but the per-image optimization of the gaps.
DEFAULT_METRICS: tuple[str, ...] = ("logpx", "elbo", "active", "surgery")
#: Metrics built on p(z): a model without a prior (an autoencoder) is refused them,
#: and by default gets the others.
PRIOR_METRICS: tuple[str, ...] = ("logpx", "surgery", "gaps")

#: Importance samples per image for log p(x) by default: with 1000 images a minute on
#: two CPU cores for the README's Fashion-MNIST runs (-k 5000 for published figures).
DEFAULT_K = 500

#: Budget of the default K, in floating-point operations (matrix products) of the
#: draws of log p(x): a model whose density is costly gets fewer draws per image (at
#: least :data:`MIN_AUTO_K`), with a warning, so that the default evaluation still
#: finishes in about a minute. Fashion-MNIST's MLP 784-400-50 costs 0.67 MFLOP a draw
#: (500 draws of 1000 images: 3.3e11); a VampPrior with an IAF guide on the digits,
#: which inverts the flow for each of its 50 pseudo-inputs, 184 MFLOP.
EVALUATION_FLOPS = 1e12

MIN_AUTO_K = 10

#: Images evaluated by default (the first ones of the split): a mean over 1000
#: images is known to about a tenth of the per-image spread.
DEFAULT_N = 1000

#: Images for the inference gaps when ``gaps`` is asked for without a number.
DEFAULT_GAP_POINTS = 8


#: A row of the terminal table: name, value, standard error over images, Monte Carlo one.
_Row = tuple[str, float | None, float | None, float | None]


@dataclass
class EvaluationResult:
    """Figures of :func:`evaluate`, per data point in nats unless named otherwise.

    Figures of a metric not in ``metrics`` are ``None``. Each Monte Carlo figure
    ``f`` has ``f_stderr`` (over images) and ``f_mc_stderr`` (Monte Carlo), see
    the module docstring.

    - ``logpx``: ``log_px``, the importance-sampled log p(x) with ``k`` samples
      per image; ``elbo_k``, the mean of the same ``k`` log-ratios; bits per
      dimension (:func:`bits_per_dim`; ``None`` with ``bits_per_dim_note``
      saying why when it is no code length).
    - ``elbo``: ``elbo`` = ``recon`` - ``kl``, each image's terms averaged over
      ``elbo_draws`` draws of z (those of ``logpx`` when it is computed too), the
      KL in closed form where torch has it. With ``logpx`` too,
      ``log_px_minus_elbo``, whose Monte Carlo standard error counts the two
      estimates' covariance (they share their draws).
    - ``active``: ``unit_variances`` = Cov_x(E_q[z_u|x]) and ``active_units``,
      the number above :data:`ACTIVE_UNIT_THRESHOLD`. Where q has no closed-form
      mean (flow guides) E_q is a mean of draws: ``unit_variances_mc_stderr`` is
      each variance's Monte Carlo standard error, and ``active_units_uncertain``
      the number of units within two of them of the threshold (0 for closed forms).
    - ``surgery`` (:class:`SurgeryResult`) and ``gaps`` (:class:`GapsResult`).
    """

    split: str
    n: int
    k: int
    n_dims: int
    n_latent: int
    metrics: list[str]
    log_px: float | None = None
    log_px_stderr: float | None = None
    log_px_mc_stderr: float | None = None
    elbo_k: float | None = None
    elbo_k_stderr: float | None = None
    elbo_k_mc_stderr: float | None = None
    bits_per_dim: float | None = None
    bits_per_dim_stderr: float | None = None
    bits_per_dim_mc_stderr: float | None = None
    bits_per_dim_note: str | None = None
    elbo: float | None = None
    elbo_stderr: float | None = None
    elbo_mc_stderr: float | None = None
    recon: float | None = None
    recon_stderr: float | None = None
    recon_mc_stderr: float | None = None
    kl: float | None = None
    kl_stderr: float | None = None
    kl_mc_stderr: float | None = None
    elbo_draws: int | None = None
    #: False for an autoencoder: z is a function of x and the ELBO its reconstruction term.
    has_prior: bool = True
    #: True for m2: log p(x) sums the label out, its proposal the marginal
    #: q(z|x) = sum_y q(y|x) q(z|x,y), whose bound is tighter than the training ELBO.
    labels_summed_out: bool = False
    log_px_minus_elbo: float | None = None
    log_px_minus_elbo_stderr: float | None = None
    log_px_minus_elbo_mc_stderr: float | None = None
    active_units: int | None = None
    unit_variances: list[float] | None = None
    unit_variances_mc_stderr: list[float] | None = None
    active_units_uncertain: int | None = None
    surgery: SurgeryResult | None = None
    gaps: GapsResult | None = None
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    accuracy: float | None = None  # M2 runs: q(y|x)'s, on the labelled points
    accuracy_stderr: float | None = None
    accuracy_n: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The figures as plain JSON values (an undefined standard error is ``None``)."""
        return json_safe(asdict(self))

    def _estimate_rows(self) -> list[_Row]:
        rows: list[_Row] = []
        if self.log_px is not None:
            rows.append((f"log p(x) (IS, K={self.k})", *self._triple("log_px")))
            if self.elbo is None:
                name = f"ELBO (mean of the K={self.k} log-ratios)"
                if self.labels_summed_out:
                    name = f"ELBO of sum_y q(y|x) q(z|x,y) (K={self.k}; not the training ELBO)"
                rows.append((name, *self._triple("elbo_k")))
        if self.elbo is not None and not self.has_prior:
            rows.append(("reconstruction log p(x|z(x)) (autoencoder)", *self._triple("recon")))
        elif self.elbo is not None:
            rows += [
                (f"ELBO ({self.elbo_draws} draws of z per image)", *self._triple("elbo")),
                ("  reconstruction E_q[log p(x|z)]", *self._triple("recon")),
                ("  KL(q(z|x) || p(z))", *self._triple("kl")),
            ]
        if self.log_px_minus_elbo is not None:
            rows.append(("log p(x) - ELBO", *self._triple("log_px_minus_elbo")))
        if self.bits_per_dim is not None:
            rows.append(("bits per dimension", *self._triple("bits_per_dim")))
        if self.surgery is not None:
            rows += _surgery_rows(self.surgery)
        if self.gaps is not None:
            rows += _gap_rows(self.gaps)
        rows += _accuracy_rows(self)
        return rows

    def _triple(self, name: str) -> tuple[float | None, float | None, float | None]:
        return (
            getattr(self, name),
            getattr(self, f"{name}_stderr"),
            getattr(self, f"{name}_mc_stderr"),
        )

    def format_table(self) -> str:
        """A plain-text table for the terminal: value, standard error over images, and
        Monte Carlo standard error."""

        def cell(value: float | None, digits: int = 3) -> str:
            return "" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"

        rows = self._estimate_rows()
        width = max([len(name) for name, *_ in rows] + [26])
        title = f"{self.split} set: {self.n} images, {self.n_dims} dims, {self.seconds:.1f} s"
        lines = [title, f"{'':<{width}}  {'value':>10}  {'± images':>9}  {'± MC':>8}"]
        lines.append("-" * (width + 35))
        for name, value, stderr, mc in rows:
            digits = 4 if name.startswith("bits") else 3
            lines.append(
                f"{name:<{width}}  {cell(value, digits):>10}  {cell(stderr, digits):>9}"
                f"  {cell(mc, digits):>8}".rstrip()
            )
        if self.bits_per_dim is None and self.bits_per_dim_note:
            lines.append(f"bits per dimension {self.bits_per_dim_note}")
        elif self.bits_per_dim_note:
            lines.append(f"bits per dimension: {self.bits_per_dim_note}")
        if self.active_units is not None:
            active = f"{self.active_units} / {self.n_latent}"
            label = f"active units (Cov > {ACTIVE_UNIT_THRESHOLD:g})"
            line = f"{label:<{width}}  {active:>10}"
            if self.active_units_uncertain:
                near = f"within 2 MC s.e. of {ACTIVE_UNIT_THRESHOLD:g}"
                line += f"  ({self.active_units_uncertain} {near})"
            lines.append(line)
        lines += [f"warning: {text}" for text in self.warnings]
        return "\n".join(lines)


def _surgery_rows(s: SurgeryResult) -> list[_Row]:
    """Table rows of ELBO surgery: name, value, standard error over images (the average
    KL's; the others are figures of the images' aggregate posterior), MC."""
    return [
        (f"ELBO surgery over {s.points} images, {s.draws} draws of q(z)", None, None, None),
        ("  average KL", s.average_kl, s.average_kl_stderr, s.average_kl_mc_stderr),
        ("  KL(q(z) || p(z)) (marginal)", s.marginal_kl, None, s.marginal_kl_mc_stderr),
        (
            "  I(x; z) (mutual information)",
            s.mutual_information,
            None,
            s.mutual_information_mc_stderr,
        ),
        ("  I(x; z) upper bound log M", s.mutual_information_bound, None, None),
    ]


def _gap_rows(g: GapsResult) -> list[_Row]:
    """Table rows of the inference gaps: name, value, standard error over images, MC."""
    fit = f"{g.iterations} steps" + ("" if g.converged else ", NOT converged")
    se = g.stderr.get
    return [
        (f"gaps over {g.n} images (q* = {g.kind}, {fit})", None, None, None),
        ("  log p(x) (IS, mixture of q and q*)", g.log_px, se("log_px"), g.log_px_mc_stderr),
        ("  ELBO(q*) per-image optimized", g.elbo_local, se("elbo_local"),
         g.elbo_local_mc_stderr),
        ("  ELBO(q) amortized", g.elbo_amortized, se("elbo_amortized"),
         g.elbo_amortized_mc_stderr),
        ("  approximation gap", g.approximation_gap, se("approximation_gap"),
         g.approximation_gap_mc_stderr),
        ("  amortization gap", g.amortization_gap, se("amortization_gap"),
         g.amortization_gap_mc_stderr),
    ]  # fmt: skip


def add_accuracy(result: EvaluationResult, scored: Accuracy) -> None:
    """Put a classifier's accuracy (an M2 run's q(y|x)) into ``result``."""
    result.accuracy, result.accuracy_stderr = scored.accuracy, scored.stderr
    result.accuracy_n = scored.n


def _accuracy_rows(result: EvaluationResult) -> list[_Row]:
    if result.accuracy is None:
        return []
    name = f"accuracy of q(y|x) ({result.accuracy_n} labelled)"
    return [(name, result.accuracy, result.accuracy_stderr, None)]


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float replaced by ``None`` (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value


def parse_metrics(metrics: str | Sequence[str]) -> list[str]:
    """``"logpx,elbo"`` or a sequence -> the list of metric names, checked."""
    names = metrics.split(",") if isinstance(metrics, str) else list(metrics)
    names = [name.strip() for name in names if name.strip()]
    unknown = [name for name in names if name not in METRICS]
    if unknown or not names:
        got = (
            f"{', '.join(unknown)} {'is' if len(unknown) == 1 else 'are'} not one"
            if unknown
            else "got nothing"
        )
        raise ConfigError(f"--metrics takes a comma-separated list of {', '.join(METRICS)}; {got}")
    return [name for name in METRICS if name in names]


@dataclass
class _Inputs:
    """What every metric's step reads: the model, the images and the options of
    :func:`evaluate`; ``draws`` holds the draws of log p(x) for the steps after it."""

    vae: VAE
    images: torch.Tensor
    k: int
    batch_size: int
    chunk_size: int | None
    memory_budget: int | None
    progress: bool
    gaps: int
    gap_kind: str
    gap_steps: int
    surgery_points: int | None
    surgery_draws: int | None
    surgery_budget: float
    draws: ImportanceEstimate | None = None


def default_k(vae: VAE, n: int, budget: float | None = None) -> int:
    """K for ``n`` images: :data:`DEFAULT_K`, or fewer (at least :data:`MIN_AUTO_K`)
    when ``n`` K draws would cost more than ``budget`` flops (:func:`draw_flops`;
    default :data:`EVALUATION_FLOPS`)."""
    flops = draw_flops(vae)
    if flops <= 0:
        return DEFAULT_K
    budget = EVALUATION_FLOPS if budget is None else budget
    return int(min(DEFAULT_K, max(MIN_AUTO_K, budget // (n * flops))))


def evaluate(
    vae: VAE,
    images: torch.Tensor,
    k: int | None = None,
    *,
    split: str = "test",
    metrics: str | Sequence[str] = DEFAULT_METRICS,
    gaps: int = 0,
    gap_kind: str = "auto",
    gap_steps: int = 5000,
    surgery_points: int | None = None,
    surgery_draws: int | None = None,
    surgery_budget: float = SURGERY_FLOPS,
    batch_size: int = 100,
    chunk_size: int | None = None,
    memory_budget: int | str | None = None,
    progress: bool = False,
) -> EvaluationResult:
    """Log-likelihood, ELBO terms, bits/dim, active units, ELBO surgery and gaps.

    Parameters
    ----------
    vae
        A trained VAE.
    images
        ``(N, C, H, W)`` in the stored form, binary for a binary likelihood.
    k
        Importance samples per image for log p(x) (and for the gaps); default
        :func:`default_k`: :data:`DEFAULT_K`, fewer for a costly density, with a
        warning.
    metrics
        What to compute, from :data:`METRICS` (a list or a comma-separated
        string); each is a step of :data:`METRIC_STEPS`, run in that order.
    gaps
        Images (the first ones) for the inference gaps; > 0 adds ``gaps`` to
        ``metrics``, and ``gaps`` in ``metrics`` with 0 here takes
        :data:`DEFAULT_GAP_POINTS`.
    gap_kind, gap_steps
        Family of the per-image q* and the most steps of each of its fits (see
        :func:`inference_gaps`).
    surgery_points, surgery_draws, surgery_budget
        Size of ELBO surgery (see :func:`elbo_surgery`).
    chunk_size, memory_budget
        Draws of z per image held at once by importance sampling: ``chunk_size``
        fixes it; by default as many as ``memory_budget`` bytes hold (``"256M"``,
        bytes, or ``None``/``"auto"``: :func:`default_memory_budget`).
    progress
        Progress bars on stderr for the steps that take long.

    Returns
    -------
    EvaluationResult
    """
    chosen = parse_metrics(metrics)
    budget = parse_memory_budget(memory_budget)
    if gaps < 0:
        raise ConfigError(f"gaps must be >= 0, got {gaps}")
    if gaps and "gaps" not in chosen:
        chosen.append("gaps")
    chosen = _without_prior(vae, chosen)
    if images.shape[0] < 2:
        raise ConfigError("evaluation needs at least two images")
    started = time.perf_counter()
    warnings = []
    if k is None:
        k = default_k(vae, images.shape[0])
        if k < DEFAULT_K:
            warnings.append(
                f"K = {k} draws per image, not {DEFAULT_K}: the model's density is costly "
                f"({draw_flops(vae) / 1e6:.0f} MFLOP a draw), so the default K is sized to "
                f"{EVALUATION_FLOPS:.0e} flops; pass -k for more"
            )
    if k == 1 and "logpx" in chosen:
        warnings.append(
            "K = 1: log p(x) is then a one-draw ELBO, a lower bound with no Monte Carlo "
            "error to report; pass -k 2 or more"
        )
    result = EvaluationResult(
        split=split,
        n=images.shape[0],
        k=k,
        n_dims=math.prod(vae.data_shape),
        n_latent=vae.n_latent,
        metrics=chosen,
        warnings=warnings,
        has_prior=vae.has_prior,
        labels_summed_out=isinstance(vae, LabelledVAE),
    )
    inputs = _Inputs(
        vae=vae,
        images=images,
        k=k,
        batch_size=batch_size,
        chunk_size=chunk_size,
        memory_budget=budget,
        progress=progress,
        gaps=gaps,
        gap_kind=gap_kind,
        gap_steps=gap_steps,
        surgery_points=surgery_points,
        surgery_draws=surgery_draws,
        surgery_budget=surgery_budget,
    )
    for name in chosen:
        METRIC_STEPS[name](result, inputs)
    synchronize(module_device(vae))
    result.seconds = time.perf_counter() - started
    return result


def _without_prior(vae: VAE, chosen: list[str]) -> list[str]:
    """``chosen``, for a model without a prior: the default metrics less those built on
    p(z); one of those asked for is a :class:`ConfigError`."""
    if vae.has_prior:
        return chosen
    if chosen == list(DEFAULT_METRICS):
        # Active units too are measured against the prior's unit scale: by default an
        # autoencoder gets its reconstruction log-likelihood (its ELBO, KL 0) alone.
        return ["elbo"]
    needing = [name for name in chosen if name in PRIOR_METRICS]
    if needing:
        raise ConfigError(
            f"{', '.join(needing)} need a prior p(z), which an autoencoder has not: "
            "use --metrics elbo,active (its ELBO is the reconstruction log-likelihood)"
        )
    return chosen


def _add_log_px(result: EvaluationResult, inputs: _Inputs) -> None:
    """IS log p(x), the ELBO of the same draws and bits/dim; keeps the draws for later steps."""
    vae, images, k = inputs.vae, inputs.images, inputs.k
    estimate = importance_all(
        vae,
        images,
        k,
        inputs.chunk_size,
        inputs.batch_size,
        inputs.progress,
        memory_budget=inputs.memory_budget,
    )
    inputs.draws = estimate
    result.log_px = float(estimate.log_px.mean())
    result.log_px_stderr = standard_error(estimate.log_px)
    result.log_px_mc_stderr = mc_standard_error(estimate.log_px_var)
    result.elbo_k = float(estimate.elbo.mean())
    result.elbo_k_stderr = standard_error(estimate.elbo)
    result.elbo_k_mc_stderr = mc_standard_error(estimate.elbo_var)
    bits = bits_per_dim(
        vae,
        images,
        estimate,
        k,
        batch_size=inputs.batch_size,
        chunk_size=inputs.chunk_size,
        memory_budget=inputs.memory_budget,
        progress=inputs.progress,
    )
    result.bits_per_dim, result.bits_per_dim_note = bits.value, bits.note
    result.bits_per_dim_stderr, result.bits_per_dim_mc_stderr = bits.stderr, bits.mc_stderr


def _add_surgery(result: EvaluationResult, inputs: _Inputs) -> None:
    """ELBO surgery, the KL from the draws of log p(x) when there are some; skipped
    with a warning for a guide that cannot score codes it did not draw."""
    vae, draws = inputs.vae, inputs.draws
    if not getattr(vae.guide_net, "scores_any_z", True):
        result.warnings.append(
            f"ELBO surgery skipped: the {vae.config.guide} guide has no density at codes it "
            "did not draw itself (no closed-form inverse), which the aggregate posterior needs"
        )
        return
    result.surgery = elbo_surgery(
        vae,
        inputs.images,
        points=inputs.surgery_points,
        draws=inputs.surgery_draws,
        budget=inputs.surgery_budget,
        kl_draws=None if draws is None else (draws.kl, draws.kl_var),
        progress=inputs.progress,
    )
    n, m = inputs.images.shape[0], result.surgery.points
    if m < n:
        result.warnings.append(
            f"ELBO surgery took {m} of the {n} images (its compute budget): I(x; z) is at most "
            f"log {m} = {math.log(m):.2f} there, so over all the images it may be larger, and "
            "the marginal KL smaller"
        )
    result.warnings += negative_kl_warnings(result.surgery)


def negative_kl_warnings(s: SurgeryResult) -> list[str]:
    """What to make of a marginal KL estimated below zero, where no KL can be.

    KL(q(z) || p(z)) is the average KL less the estimate of I(x; z), so when the
    aggregate posterior is close to the prior its Monte Carlo error can take it
    below 0: within two standard errors that is a KL of about 0, further down a
    sign that the standard error understates the error (heavy-tailed densities).
    """
    if not s.marginal_kl < 0:
        return []
    figure = f"{s.marginal_kl:.3f} ± {s.marginal_kl_mc_stderr:.3f} (MC)"
    if s.marginal_kl >= -2 * s.marginal_kl_mc_stderr:
        return [
            f"KL(q(z) || p(z)) is estimated at {figure}, below 0 within its Monte Carlo "
            "error: read it as about 0 (the aggregate posterior is as close to the prior as "
            "these draws can tell)"
        ]
    return [
        f"KL(q(z) || p(z)) is estimated at {figure}, more than 2 standard errors below 0, "
        "where no KL can be: its Monte Carlo error is larger than estimated (heavy-tailed "
        "densities), so the split of the average KL is not to be trusted"
    ]


def _add_gaps(result: EvaluationResult, inputs: _Inputs) -> None:
    """The inference gaps of the first images, with a warning when q* did not converge."""
    result.gaps = inference_gaps(
        inputs.vae,
        inputs.images[: inputs.gaps or DEFAULT_GAP_POINTS],
        inputs.k,
        kind=inputs.gap_kind,
        max_steps=inputs.gap_steps,
        chunk_size=inputs.chunk_size,
        progress=inputs.progress,
    )
    if not result.gaps.converged:
        result.warnings.append(
            f"q* of the gaps did not converge within its step limit ({result.gaps.iterations} "
            "steps): the approximation gap is overstated, the amortization gap understated"
        )


def _add_elbo(result: EvaluationResult, inputs: _Inputs) -> None:
    """ELBO, reconstruction and KL: from the K draws of log p(x) when there are some
    (the KL in closed form where torch has it), else averaged over fresh draws."""
    vae, images, draws, progress = inputs.vae, inputs.images, inputs.draws, inputs.progress
    if draws is None:
        with eval_mode(vae):
            terms = average_elbo_terms(
                vae.model, vae.guide, images.to(module_device(vae)), progress=progress
            )
        recon, recon_var, kl, kl_var = terms.recon, terms.recon_var, terms.kl, terms.kl_var
        elbo_var, result.elbo_draws = terms.elbo_var, terms.draws
    else:
        recon, recon_var, result.elbo_draws = draws.recon, draws.recon_var, result.k
        analytic = _analytic_kl(vae, images, inputs.batch_size)
        if analytic is None:
            kl, kl_var, elbo_var = draws.kl, draws.kl_var, draws.elbo_var
            cov = draws.log_px_elbo_cov
        else:
            kl, kl_var, elbo_var = analytic, torch.zeros_like(analytic), recon_var
            cov = draws.log_px_recon_cov  # the KL is exact: the ELBO varies as recon does
    figures = [("elbo", recon - kl, elbo_var), ("recon", recon, recon_var), ("kl", kl, kl_var)]
    if draws is not None:
        gap_var = (draws.log_px_var + elbo_var - 2 * cov).clamp(min=0)
        figures.append(("log_px_minus_elbo", draws.log_px - (recon - kl), gap_var))
    for name, values, var in figures:
        setattr(result, name, float(values.mean()))
        setattr(result, f"{name}_stderr", standard_error(values))
        setattr(result, f"{name}_mc_stderr", mc_standard_error(var))
    if not vae.has_prior:  # an autoencoder: z is f(x), no draws and no KL term to report
        result.kl = result.kl_stderr = result.kl_mc_stderr = None
        result.elbo_draws = None


@torch.no_grad()
def _analytic_kl(vae: VAE, images: torch.Tensor, batch_size: int) -> torch.Tensor | None:
    """KL(q(z|x) || p(z)) per image in closed form, ``(N,)`` float64, or ``None``."""
    device = module_device(vae)
    parts = []
    with eval_mode(vae):
        for index in index_batches(images, batch_size):
            qz = vae.qz(to_unit_float(images[index].to(device)))
            try:
                parts.append(kl_divergence(qz, vae.prior().expand(qz.batch_shape)).double())
            except NotImplementedError:
                return None
    return torch.cat(parts)


def _add_active_units(result: EvaluationResult, inputs: _Inputs) -> None:
    """Cov_x(E_q[z_u|x]) per latent unit, and a warning when most units are inactive."""
    vae = inputs.vae
    variances, stderr = unit_variances(vae, inputs.images, inputs.batch_size, inputs.progress)
    n_active = int((variances > ACTIVE_UNIT_THRESHOLD).sum())
    result.active_units, result.unit_variances = n_active, variances.tolist()
    result.unit_variances_mc_stderr = stderr.tolist()
    near = (variances - ACTIVE_UNIT_THRESHOLD).abs() < 2 * stderr
    result.active_units_uncertain = int(near.sum())
    if n_active * 2 < vae.n_latent:
        result.warnings.append(
            f"only {n_active} of {vae.n_latent} latent units are active: most of the latent "
            "space is unused (posterior collapse); try KL warm-up (--kl-warmup) or fewer units"
        )


#: The step of each metric: it writes its figures into the result and may leave
#: something in the inputs for the steps after it (``logpx``: its draws). A new metric
#: is one entry here and one name in :data:`METRICS`.
METRIC_STEPS: dict[str, Callable[[EvaluationResult, _Inputs], None]] = {
    "logpx": _add_log_px,
    "elbo": _add_elbo,
    "active": _add_active_units,
    "surgery": _add_surgery,
    "gaps": _add_gaps,
}
