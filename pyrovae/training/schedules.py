"""Schedules over training: KL warm-up and the learning rate.

β rises linearly from just above 0 to ``beta`` over ``kl_warmup`` epochs
(Bowman et al. 2016, "Generating Sentences from a Continuous Space";
Sønderby et al. 2016, "Ladder Variational Autoencoders").

The learning rate is a function of the epoch and of the metrics so far, so
that a resumed run gets exactly the rate it would have had: ``cosine``
anneals it from ``lr`` to 0 over the epochs (Loshchilov & Hutter 2017,
"SGDR"), ``plateau`` replays torch's
:class:`~torch.optim.lr_scheduler.ReduceLROnPlateau` over the evaluations so
far (halved after :data:`PLATEAU_PATIENCE` evaluations without a better
validation ELBO, or training ELBO where there is no validation split).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from pyrovae.config import RunConfig, TrainConfig

#: Evaluations without improvement before ``plateau`` halves the learning rate.
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
    """What ``plateau`` (and the best checkpoint) watch in a metrics row: the validation
    ELBO, or the training ELBO where the run has no validation split; ``None`` in
    rows of epochs that were not evaluated."""
    if "val_elbo" in row:
        return float(row["val_elbo"])
    if "test_elbo" in row:  # an evaluated epoch of a run without validation
        return float(row["train_elbo"])
    return None


def learning_rate(train: TrainConfig, epoch: int, history: list[dict[str, Any]]) -> float:
    """The learning rate of epoch ``epoch`` (0-based), given the metrics rows before it."""
    if train.lr_schedule == "cosine":
        return train.lr * 0.5 * (1.0 + math.cos(math.pi * epoch / train.epochs))
    if train.lr_schedule == "plateau":
        return _plateau(train.lr, [v for v in map(monitored, history) if v is not None])
    return train.lr


def _plateau(lr: float, values: list[float]) -> float:
    """torch's ReduceLROnPlateau, stepped on ``values`` (higher is better) from ``lr``."""
    weight = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([weight], lr=lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer,
        mode="max",
        factor=PLATEAU_FACTOR,
        patience=PLATEAU_PATIENCE,
        min_lr=lr * PLATEAU_FLOOR,
    )
    for value in values:
        scheduler.step(value)
    return float(optimizer.param_groups[0]["lr"])
