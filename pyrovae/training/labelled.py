"""Training on labels: the conditional VAE, and M2's semi-supervised objective.

The epoch loop (:mod:`pyrovae.training.loop`) asks :func:`uses_labels` and,
for ``--model cvae`` or ``m2``, takes the step, the untrained reference loss
and the per-epoch test figures from here; :func:`pyrovae.training.step.train_epoch`
hands each batch's labels to the step.

M2's objective is Kingma et al. (2014)'s J^alpha, as a sum over the training set:
the ELBO of each unlabelled point with y summed out (Pyro's
:class:`~pyro.infer.TraceEnum_ELBO`, parallel enumeration), plus the ELBO of
each labelled point with y observed and alpha log q(y|x). Every step mixes the
two: the batch's unlabelled points, and a minibatch drawn from the labelled
points weighted so that the step estimates the same sum without bias
(labelled points are few: drawn every step rather than met once an epoch,
as Pyro's ``ss_vae_M2.py`` alternates labelled and unlabelled batches).
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import torch
from pyro.infer import ELBO, TraceEnum_ELBO

from pyrovae.config import LABELLED_KINDS, RunConfig
from pyrovae.data.dataset import ArrayData
from pyrovae.data.labels import UNLABELLED, keep_balanced
from pyrovae.data.pixels import draw_binary, to_unit_float
from pyrovae.errors import CheckpointError, DataError
from pyrovae.inference.classification import classifier_accuracy
from pyrovae.inference.objectives import evaluate_elbo
from pyrovae.model.conditional import ConditionalVAE, LabelledVAE
from pyrovae.model.semi_supervised import SemiSupervisedVAE
from pyrovae.model.vae import VAE
from pyrovae.runtime import eval_mode, forked_rng, module_device
from pyrovae.training import divergence
from pyrovae.training.divergence import REFERENCE_IMAGES
from pyrovae.training.step import GradientHook, TrainStep, check_regularizers

#: Pyro's ss_vae_M2.py weights its classification loss by 46 on 50,000 training images;
#: the default alpha per labelled point is that, scaled to the run's number of points.
PYRO_AUX_WEIGHT, PYRO_TRAIN_SIZE = 46.0, 50_000
#: Draws of z per test point for the per-epoch test ELBO (its Monte Carlo error is reported).
TEST_DRAWS = 2


def uses_labels(config: RunConfig) -> bool:
    """Whether the run's model kind trains on labels (``cvae``, ``m2``)."""
    return config.model.kind in LABELLED_KINDS


def prepare_labels(config: RunConfig, data: ArrayData) -> ArrayData:
    """The data with the labels the run trains on; ``config.model.n_classes`` filled in.

    ``--labeled N`` keeps N class-balanced training labels (seeded with the
    run's seed). A conditional VAE needs every training label; M2 needs some.
    """
    if not uses_labels(config):
        return data
    kind = config.model.kind
    if config.model.missing:
        raise DataError(
            f"{data.name} has missing values (NaN), which --model {kind} does not model: "
            "train a vae or an ae on it"
        )
    train, test = data.train_labels, data.test_labels
    if train is None:
        raise DataError(
            f"--model {kind} needs labels and {data.name} has none: use a named data set, "
            "a .npz with x and y (y = -1 for an unlabelled point) or a folder of class folders"
        )
    if config.data.labeled is not None:
        train = keep_balanced(train, config.data.labeled, config.train.seed)
    lowest = min(int(t.min()) for t in (train, test) if t is not None and t.numel())
    if lowest < UNLABELLED:
        raise DataError(f"labels must be class ids 0, 1, ... or -1 (unlabelled), got {lowest}")
    missing = int((train < 0).sum())
    if kind == "cvae" and missing:
        raise DataError(
            f"--model cvae needs a label for every training point, but {missing} are -1 "
            "(unlabelled): train --model m2 on partly labelled data"
        )
    if missing == train.numel():
        raise DataError(f"--model {kind} needs some labelled training points; all are -1")
    if kind == "cvae" and (test is None or not bool((test >= 0).any())):
        has = "no labels" if test is None else "only -1 (unlabelled)"
        raise DataError(
            f"--model cvae scores test points given their labels, and the test split of "
            f"{data.name} has {has}: give test labels (y_test), or train --model m2"
        )
    given = (data.train_labels, test)  # before --labeled hid some: every class that appears
    n_classes = 1 + max(int(t.max()) for t in given if t is not None and t.numel())
    seen = torch.unique(torch.cat([t[t >= 0] for t in given if t is not None]))
    if n_classes > 2 * seen.numel():  # a network output per id up to the largest
        raise DataError(
            f"--model {kind} takes one class per id 0..{n_classes - 1}, but only "
            f"{seen.numel()} of them appear: number the classes 0..K-1"
        )
    recorded = config.model.n_classes
    if recorded is not None and recorded != n_classes:
        raise CheckpointError(
            f"the run was trained on {recorded} classes but the data now have {n_classes}"
        )
    config.model.n_classes = n_classes
    return dataclasses.replace(data, train_labels=train)


def aux_weight(config: RunConfig, n_train: int) -> float:
    """alpha: ``--aux-weight``, or Pyro's example's weight scaled to ``n_train`` points."""
    if config.train.aux_weight is not None:
        return config.train.aux_weight
    return PYRO_AUX_WEIGHT * n_train / PYRO_TRAIN_SIZE


class LabelledStep(TrainStep):
    """The step of a conditional VAE: the ELBO of (x, y) through Pyro's estimator."""

    vae: LabelledVAE

    def __init__(
        self,
        vae: LabelledVAE,
        objective: ELBO,
        optimizer: torch.optim.Optimizer,
        labels: torch.Tensor,
        *,
        gradient_hook: GradientHook | None = None,
        clip_grad_norm: float = 0.0,
    ) -> None:
        super().__init__(
            vae,
            objective,
            optimizer,
            fast=False,
            gradient_hook=gradient_hook,
            clip_grad_norm=clip_grad_norm,
        )
        self.labels = labels

    def loss(
        self,
        x: torch.Tensor,
        *,
        beta: float = 1.0,
        x_in: torch.Tensor | None = None,
        y: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if y is None:
            raise ValueError("a labelled model's step needs the batch's labels y")
        return self.plain_loss(x, y, beta=beta)

    def plain_loss(self, x: torch.Tensor, y: torch.Tensor, *, beta: float = 1.0) -> torch.Tensor:
        """Minus the ELBO of (x, y), summed over the batch."""
        objective: Any = self.objective
        options = {} if beta == 1.0 else {"beta": beta}
        return objective.differentiable_loss(self.vae.model, self.vae.guide, x, y, **options)


class SemiSupervisedStep(LabelledStep):
    """M2's step: the batch's unlabelled points with y enumerated, and a minibatch of
    labelled points (ELBO and alpha log q(y|x)) weighted to their share of the data."""

    vae: SemiSupervisedVAE

    def __init__(
        self,
        vae: SemiSupervisedVAE,
        objective: ELBO,
        optimizer: torch.optim.Optimizer,
        labels: torch.Tensor,
        pool: tuple[torch.Tensor, torch.Tensor],
        *,
        aux_weight: float,
        binarize: bool,
        gradient_hook: GradientHook | None = None,
        clip_grad_norm: float = 0.0,
    ) -> None:
        super().__init__(
            vae,
            objective,
            optimizer,
            labels,
            gradient_hook=gradient_hook,
            clip_grad_norm=clip_grad_norm,
        )
        particles = getattr(objective, "num_particles", 1)
        self.enumerated = TraceEnum_ELBO(
            num_particles=particles, vectorize_particles=particles > 1, max_plate_nesting=1
        )
        self.pool_x, self.pool_y = pool  # the labelled training points, stored form
        self.aux_weight, self.binarize = aux_weight, binarize
        self.n_train = labels.shape[0]

    def loss(
        self,
        x: torch.Tensor,
        *,
        beta: float = 1.0,
        x_in: torch.Tensor | None = None,
        y: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if y is None:
            raise ValueError("M2's step needs the batch's labels y (-1: unlabelled)")
        total = self.unlabelled_loss(x[y < 0], beta)
        n_labelled = self.pool_y.shape[0]
        draw = torch.randint(n_labelled, (min(x.shape[0], n_labelled),), device=x.device)
        x_l, y_l = self._pool_batch(draw)
        # The batch's expected number of labelled points, over the ones drawn.
        weight = x.shape[0] * n_labelled / self.n_train / draw.shape[0]
        supervised = self.plain_loss(x_l, y_l, beta=beta)
        aux = self.aux_weight * self.vae.classification_loss(x_l, y_l).sum()
        return total + weight * (supervised + aux)

    def unlabelled_loss(self, x: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
        """Minus the ELBO with y summed out (TraceEnum_ELBO), summed over the batch."""
        if x.shape[0] == 0:
            return torch.zeros((), device=x.device)
        options = {} if beta == 1.0 else {"beta": beta}
        return self.enumerated.differentiable_loss(self.vae.model, self.vae.guide, x, **options)

    def _pool_batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = to_unit_float(self.pool_x[index.to(self.pool_x.device)]).to(index.device)
        if self.binarize:
            x = draw_binary(x)
        return x, self.pool_y[index.to(self.pool_y.device)].to(index.device)


def make_step(
    config: RunConfig,
    vae: VAE,
    objective: ELBO,
    optimizer: torch.optim.Optimizer,
    data: ArrayData,
    *,
    binarize: bool,
    gradient_hook: GradientHook | None = None,
) -> TrainStep:
    """The training step of ``config``'s model kind: a VAE's plain
    :class:`~pyrovae.training.step.TrainStep`, or one that reads each batch's labels."""
    clip = config.train.clip_grad_norm
    if not uses_labels(config):
        corruption, sparsity = check_regularizers(config.train, config.data.display_range)
        return TrainStep(
            vae,
            objective,
            optimizer,
            fast=not config.train.pyro_step,
            gradient_hook=gradient_hook,
            corruption=corruption,
            sparsity=sparsity,
            clip_grad_norm=clip,
            free_bits=config.train.free_bits,
        )
    assert data.train_labels is not None  # prepare_labels has run
    device = module_device(vae)
    labels = data.train_labels.to(device)
    if isinstance(vae, SemiSupervisedVAE):
        known = torch.nonzero(labels >= 0).flatten()
        pool_x = data.train[known.cpu() if data.streamed else known].to(device)
        pool = (pool_x, labels[known])
        weight = aux_weight(config, labels.shape[0])
        return SemiSupervisedStep(vae, objective, optimizer, labels, pool, aux_weight=weight,
                                  binarize=binarize, gradient_hook=gradient_hook,
                                  clip_grad_norm=clip)  # fmt: skip
    if not isinstance(vae, LabelledVAE):
        raise TypeError(f"--model {config.model.kind} builds a labelled model, got {type(vae)}")
    return LabelledStep(
        vae, objective, optimizer, labels, gradient_hook=gradient_hook, clip_grad_norm=clip
    )


def untrained_loss(
    config: RunConfig, vae: VAE, objective: ELBO, data: ArrayData, *, binarize: bool
) -> float:
    """The loss per data point of the model as built on the first training points, the
    divergence reference (:func:`pyrovae.training.divergence.untrained_loss`), from a
    forked random stream; with the labels for a labelled kind (M2's without the
    classification term; with gradients: Pyro's TraceEnum_ELBO refuses a loss that
    cannot be differentiated)."""
    if not uses_labels(config):
        return divergence.untrained_loss(vae, objective, data.train, binarize=binarize)
    assert data.train_labels is not None and isinstance(vae, LabelledVAE)
    device = module_device(vae)
    x = to_unit_float(data.train[:REFERENCE_IMAGES]).to(device)
    y = data.train_labels[: x.shape[0]].to(device)
    with forked_rng(device), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Encountered NaN")  # said below, in one line
        if binarize:
            x = draw_binary(x)
        loss = _labelled_loss(vae, objective, x, y)
    where = f"the untrained model on the first {x.shape[0]} training points"
    divergence.check_finite_loss(loss.detach(), x, where)
    return float(loss.detach()) / x.shape[0]


def _labelled_loss(
    vae: LabelledVAE, objective: ELBO, x: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """Minus the ELBO of a batch: of (x, y) where y is known, with y summed out where not."""
    elbo: Any = objective
    known = y >= 0
    loss = torch.zeros((), device=x.device)
    if bool(known.any()):
        loss = loss + elbo.differentiable_loss(vae.model, vae.guide, x[known], y[known])
    if not bool(known.all()):
        enumerated = TraceEnum_ELBO(max_plate_nesting=1)
        loss = loss + enumerated.differentiable_loss(vae.model, vae.guide, x[~known])
    return loss


@torch.no_grad()
def evaluate_test(
    config: RunConfig,
    vae: VAE,
    images: torch.Tensor,
    labels: torch.Tensor | None,
    batch_size: int = 1000,
) -> dict[str, Any]:
    """The ELBO of held-out ``images`` (a test or validation split) with its terms and
    Monte Carlo standard error, as :func:`pyrovae.inference.objectives.evaluate_elbo`
    returns them: a VAE's from there, a CVAE's of x given its label, M2's with y
    summed out, to which M2 adds the test accuracy of q(y|x) and its binomial standard error."""
    if not uses_labels(config):
        return evaluate_elbo(vae, images)
    assert isinstance(vae, LabelledVAE)
    if isinstance(vae, ConditionalVAE):
        assert labels is not None  # prepare_labels checked it
        images, labels = images[labels >= 0], labels[labels >= 0]
    draws: list[tuple[torch.Tensor, torch.Tensor]] = []
    with eval_mode(vae):
        for _ in range(TEST_DRAWS):
            parts = [
                _terms(vae, images[i : i + batch_size], labels, i, batch_size)
                for i in range(0, images.shape[0], batch_size)
            ]
            draws.append((torch.cat([r for r, _ in parts]), torch.cat([k for _, k in parts])))
    recon = torch.stack([r for r, _ in draws]).double()  # (draws, n)
    kl = torch.stack([k for _, k in draws]).double()
    elbo = recon - kl
    n = elbo.shape[1]
    result: dict[str, Any] = {
        "elbo": float(elbo.mean()),
        "recon": float(recon.mean()),
        "kl": float(kl.mean()),
        "elbo_mc_stderr": float(elbo.var(0).sum().div(TEST_DRAWS).sqrt() / max(n, 1)),
        "draws": TEST_DRAWS,
    }
    if isinstance(vae, SemiSupervisedVAE) and labels is not None and bool((labels >= 0).any()):
        scored = classifier_accuracy(vae, images, labels)
        result["accuracy"], result["accuracy_stderr"] = scored.accuracy, scored.stderr
    return result


def _terms(
    vae: LabelledVAE, images: torch.Tensor, labels: torch.Tensor | None, start: int, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    x = to_unit_float(images)
    if isinstance(vae, SemiSupervisedVAE):
        return vae.unlabelled_terms(x, analytic_kl=True)
    assert isinstance(vae, ConditionalVAE) and labels is not None
    return vae.elbo_terms(x, labels[start : start + size])


def extra_metrics(test: dict[str, Any]) -> dict[str, Any]:
    """The metrics row's entries beyond the ELBO's: M2's test accuracy, where there is one."""
    if "accuracy" not in test:
        return {}
    return {"test_accuracy": test["accuracy"], "test_accuracy_stderr": test["accuracy_stderr"]}


def accuracy_note(row: dict[str, Any]) -> str:
    """The epoch's log line's end for M2: the test accuracy with its standard error."""
    if "test_accuracy" not in row:
        return ""
    return f"  accuracy {row['test_accuracy']:.3f} ± {row['test_accuracy_stderr']:.3f}"
