"""Schedules over training: KL warm-up and the learning rate.

β rises linearly from just above 0 to ``beta`` over ``kl_warmup`` epochs
(Bowman et al. 2016, "Generating Sentences from a Continuous Space";
Sønderby et al. 2016, "Ladder Variational Autoencoders").

The learning rate is a function of the epoch and of the metrics so far, so
that a resumed run gets exactly the rate it would have had: ``cosine``
anneals it from ``lr`` to 0 over the epochs (Loshchilov & Hutter 2017,
"SGDR") or, with a time budget (``max_time``), over the epochs or the budget,
whichever runs out first (a step size decayed to 0 over a fixed budget beats a
constant one: Li, Yumer & Ramanan 2020, "Budgeted Training"); that one depends
on the clock, and a resumed run starts its budget, and so the schedule's time
share, anew. ``plateau`` replays torch's
:class:`~torch.optim.lr_scheduler.ReduceLROnPlateau` over the evaluations so
far (halved after :data:`PLATEAU_PATIENCE` evaluations without a better
validation ELBO, or training ELBO where there is no validation split).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from pyrovae.config import RunConfig, TrainConfig

#: ``plateau`` halves the learning rate once this many evaluations in a row were not
#: better than the best before them (torch's ``patience`` is one less: the number it
#: tolerates).
PLATEAU_PATIENCE = 2
PLATEAU_FACTOR = 0.5
#: ``plateau`` never goes below this share of ``lr``.
PLATEAU_FLOOR = 1e-3


def kl_weight(config: RunConfig, step: int, steps_per_epoch: int) -> float:
    """β at global step ``step``: linear from just above 0 to ``beta`` over the warm-up."""
    warmup_steps = config.train.kl_warmup * steps_per_epoch
    if warmup_steps == 0:
        return config.train.beta
    return config.train.beta * min(1.0, (step + 1) / warmup_steps)


def monitored(row: dict[str, Any]) -> float | None:
    """What ``plateau`` watches in a metrics row: the validation ELBO, or the training
    ELBO where the run has no validation split; ``None`` in rows of epochs that were
    not evaluated, or evaluated off the ``--eval-every`` schedule only because
    ``--max-time`` stopped there (an uninterrupted run has no such evaluation; the
    best checkpoint too passes over such a row unless it has no other)."""
    if row.get("off_schedule"):
        return None
    if "val_elbo" in row:
        return float(row["val_elbo"])
    if "test_elbo" in row:  # an evaluated epoch of a run without validation
        return float(row["train_elbo"])
    return None


def learning_rate(
    train: TrainConfig,
    epoch: int,
    history: list[dict[str, Any]],
    time_share: float | None = None,
) -> float:
    """The learning rate of epoch ``epoch`` (0-based), given the metrics rows before it
    and, for ``cosine``, the share of the time budget used (``None``: no budget)."""
    if train.lr_schedule == "cosine":
        progress = schedule_progress(train, epoch, time_share)
        return train.lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    if train.lr_schedule == "plateau":
        # The training ELBO of a KL warm-up epoch (its last one included) is weighted by
        # a β still rising, so it falls while the model improves: such epochs are no
        # plateau (validation ELBOs are unweighted and all count).
        rows = [r for r in history if "val_elbo" in r or r["epoch"] > train.kl_warmup]
        return _plateau(train.lr, [v for v in map(monitored, rows) if v is not None])
    return train.lr


def schedule_progress(train: TrainConfig, epoch: int, time_share: float | None = None) -> float:
    """How far ``cosine`` is through its schedule at the start of epoch ``epoch``, from 0
    to 1: the share of the epochs done or of the time budget used (``time_share``,
    under ``max_time``), whichever is larger, so that the step size reaches 0 when
    whichever stops the run comes."""
    progress = epoch / train.epochs
    if time_share is not None:
        progress = max(progress, time_share)
    return min(1.0, progress)


def _plateau(lr: float, values: list[float]) -> float:
    """torch's ReduceLROnPlateau, stepped on ``values`` (higher is better) from ``lr``.

    "Better" is strictly higher (an absolute threshold of 0): torch's default relative
    threshold, in ``max`` mode on negative ELBOs, counted a slightly lower value as an
    improvement, so a slowly falling validation ELBO never halved the rate.
    """
    weight = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([weight], lr=lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer,
        mode="max",
        factor=PLATEAU_FACTOR,
        patience=PLATEAU_PATIENCE - 1,
        threshold=0.0,
        threshold_mode="abs",
        min_lr=lr * PLATEAU_FLOOR,
    )
    for value in values:
        scheduler.step(value)
    return float(optimizer.param_groups[0]["lr"])
