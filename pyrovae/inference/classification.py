"""Classifying with a semi-supervised VAE: q(y|x) over a data set, and its accuracy
with the binomial standard error."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from pyrovae.data.pixels import to_unit_float
from pyrovae.model.semi_supervised import SemiSupervisedVAE
from pyrovae.runtime import eval_mode, module_device


@torch.no_grad()
def class_probabilities(
    vae: SemiSupervisedVAE, images: torch.Tensor, batch_size: int = 1000
) -> torch.Tensor:
    """q(y|x) of every image of ``images`` (stored form: uint8 or float), ``(N, n_classes)``
    on the CPU."""
    device = module_device(vae)
    parts = []
    with eval_mode(vae):
        for start in range(0, images.shape[0], batch_size):
            x = to_unit_float(images[start : start + batch_size].to(device))
            parts.append(vae.classify(x).cpu())
    if not parts:
        return torch.zeros(0, vae.n_classes)
    return torch.cat(parts)


@dataclass
class Accuracy:
    """The share of ``n`` labelled points classified right, with its binomial standard
    error sqrt(p (1 - p) / n)."""

    accuracy: float
    stderr: float
    n: int


def accuracy(predicted: torch.Tensor, labels: torch.Tensor) -> Accuracy:
    """Accuracy of the class ids ``predicted`` on the points whose label is known (>= 0)."""
    known = labels.cpu() >= 0
    n = int(known.sum())
    if n == 0:
        return Accuracy(math.nan, math.nan, 0)
    p = float((predicted.cpu()[known] == labels.cpu()[known]).double().mean())
    return Accuracy(p, math.sqrt(p * (1 - p) / n), n)


def classifier_accuracy(
    vae: SemiSupervisedVAE, images: torch.Tensor, labels: torch.Tensor
) -> Accuracy:
    """Accuracy of the most probable class under q(y|x) on ``images`` with known labels."""
    known = (labels >= 0).to(images.device)
    return accuracy(
        class_probabilities(vae, images[known]).argmax(-1), labels[known.to(labels.device)]
    )
