"""An exponential moving average of the weights, for evaluation (``--ema DECAY``).

After every optimizer step t the average moves towards the weights θ_t:

θ̄_1 = θ_1,    θ̄_t = d_t θ̄_{t-1} + (1 - d_t) θ_t,    d_t = min(d, t / (t + 9)),

with decay d, warmed up as in TensorFlow's ``ExponentialMovingAverage`` with
``num_updates`` (there d_t = min(d, (1 + n) / (10 + n)) after n updates; here
n = t - 1): early on the average spans about a tenth of the steps so far, so
it never holds on to the barely trained weights of the first steps. With
d = 0.999 the warm-up ends after 8,991 steps; a short run (the digits, 6
steps an epoch at batch 256) averages its last tenth instead of keeping
most of its first epochs. Otherwise this is the rule of
:func:`torch.optim.swa_utils.get_ema_multi_avg_fn` (whose
:class:`~torch.optim.swa_utils.AveragedModel` also starts from the weights of
the first update). Averaged weights evaluate better than the last
iterate of a noisy optimizer (Polyak & Juditsky 1992; the EMA of Tarvainen &
Valpola 2017 and of most recent generative models). Every floating-point
entry of the state dict is averaged (parameters and buffers such as batch
norm's statistics); other entries are taken as they are.

Rather than a second copy of the model (which Pyro's param store would see
under the same names), the average is a dict of tensors; :meth:`swapped`
puts it into the model for an evaluation and takes it out after.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn


class WeightAverage:
    """The moving average of ``module``'s floating-point state with decay ``decay``.

    Example
    -------
    >>> ema = WeightAverage(vae, decay=0.999)
    >>> ema.update(vae)  # after each optimizer step
    >>> with ema.swapped(vae):
    ...     evaluate(vae)  # doctest: +SKIP
    """

    def __init__(self, module: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"the decay must be in (0, 1), got {decay}")
        self.decay = decay
        #: Optimizer steps averaged so far.
        self.updates = 0
        self.average: dict[str, torch.Tensor] = {
            name: value.detach().clone()
            for name, value in module.state_dict().items()
            if value.is_floating_point()
        }

    def decay_at(self, t: int) -> float:
        """d_t, the decay of update ``t`` (from 1): ``min(decay, t / (t + 9))``; 0 at the first."""
        return min(self.decay, t / (t + 9)) if t > 1 else 0.0

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        """Move the average towards ``module``'s weights now (the first update copies them)."""
        state = module.state_dict()
        weight = 1.0 - self.decay_at(self.updates + 1)
        averages = list(self.average.values())
        torch._foreach_lerp_(averages, [state[name] for name in self.average], weight)
        self.updates += 1

    def state_dict(self, module: nn.Module) -> dict[str, Any]:
        """``module``'s state dict with the averaged entries in place of its own."""
        return {name: self.average.get(name, value) for name, value in module.state_dict().items()}

    def load(self, averaged: dict[str, Any], updates: int) -> None:
        """Take the average from a state dict written by :meth:`state_dict`."""
        for name, value in self.average.items():
            value.copy_(averaged[name])
        self.updates = updates

    @contextmanager
    def swapped(self, module: nn.Module) -> Iterator[None]:
        """``module`` holds the averaged weights inside the block, its own after."""
        state = module.state_dict()
        own = {name: state[name].detach().clone() for name in self.average}
        self._copy_into(state, self.average)
        try:
            yield
        finally:
            self._copy_into(state, own)

    def copy_to(self, module: nn.Module) -> None:
        """Put the averaged weights into ``module`` for good."""
        self._copy_into(module.state_dict(), self.average)

    @staticmethod
    @torch.no_grad()
    def _copy_into(state: dict[str, torch.Tensor], values: dict[str, torch.Tensor]) -> None:
        for name, value in values.items():
            state[name].copy_(value)
