"""Divergence: a training loss that is not finite, or that has grown without bound, or
networks whose outputs no longer make a valid distribution (:func:`invalid_parameter`).

Too large a step size makes Adam's updates run away: the loss becomes NaN, or
stays finite and grows for ever (``--lr 6e6`` trained 30 epochs to an ELBO
of -1.6e32). The rule: an epoch whose mean loss (nats per data point) is above
the *untrained* model's loss by more than one nat per pixel has diverged. The
untrained model is the reference a run starts from; a model that codes its
data a nat per pixel worse than it did before training has not learnt slowly,
its updates have run away. A healthy run's epoch loss stays below the
untrained loss, up to Monte Carlo noise far below one nat per pixel.
"""

from __future__ import annotations

import math
import re
import warnings
from typing import Any

import torch

from pyrovae.data.dataset import Rows
from pyrovae.data.missing import draw_binary_batch
from pyrovae.data.pixels import to_unit_float
from pyrovae.errors import DataError
from pyrovae.model.vae import VAE
from pyrovae.runtime import forked_rng, module_device

#: Images the untrained reference loss is averaged over.
REFERENCE_IMAGES = 1024


@torch.no_grad()
def untrained_loss(
    vae: VAE,
    objective: Any,
    images: torch.Tensor | Rows,
    *,
    binarize: bool,
    n: int = REFERENCE_IMAGES,
) -> float:
    """The training loss per data point (β = 1) of ``vae`` on the first ``n`` training images.

    Called on the model as built, before any step. Its draws come from a forked
    random stream, so training draws the same numbers with or without it.
    """
    x = to_unit_float(images[:n]).to(module_device(vae))  # streamed rows are read on the CPU
    with forked_rng(x.device), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Encountered NaN")  # said below, in one line
        if binarize:
            x = draw_binary_batch(x, vae.missing)
        loss = objective.differentiable_loss(vae.model, vae.guide, x)
    check_finite_loss(loss, x, f"the untrained model on the first {x.shape[0]} training points")
    return float(loss.item()) / x.shape[0]


def check_finite_loss(loss: torch.Tensor, x: torch.Tensor, where: str) -> None:
    """Refuse a loss that is inf or nan before any update (``where`` says of what): the
    data, not the step size, are what the model cannot score."""
    if bool(torch.isfinite(loss)):
        return
    finite = x[torch.isfinite(x)]
    values = f"{finite.min().item():.3g} to {finite.max().item():.3g}" if finite.numel() else "none"
    raise DataError(
        f"the loss of {where} is {loss.item()}, before any update (finite values from "
        f"{values}): no learning rate helps; rescale the data, or choose a likelihood "
        "that fits them"
    )


def loss_limit(untrained: float, image_shape: tuple[int, ...]) -> float:
    """The largest epoch loss that is not divergence: the untrained loss plus a nat per pixel."""
    return untrained + math.prod(image_shape)


def diverged(loss: float, limit: float) -> bool:
    """Whether an epoch's mean loss ``loss`` is not finite or above ``limit``."""
    return not math.isfinite(loss) or loss > limit


def describe(loss: float, limit: float, epoch: int) -> str:
    """What went wrong in epoch ``epoch``, for a one-line error."""
    if not math.isfinite(loss):
        return f"the loss became {loss} in epoch {epoch}: training diverged"
    return (
        f"the loss grew to {loss:.4g} nats per data point in epoch {epoch}, above {limit:.4g} "
        "(the untrained model's loss plus one nat per pixel): training diverged"
    )


def invalid_parameter(error: ValueError) -> str | None:
    """Which distribution's parameter torch's argument validation found invalid, in a few
    words ("Bernoulli's logits fail the constraint Real()", i.e. inf or nan); ``None``
    for an error of another kind."""
    found = re.search(
        r"Expected parameter (\w+) .* of distribution (\w+).* to satisfy the constraint (.+?), "
        "but found invalid values",
        str(error),
    )
    if found is None:
        return None
    parameter, distribution, constraint = found.groups()
    return f"{distribution}'s {parameter} fail the constraint {constraint}"
