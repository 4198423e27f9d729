"""Schedules over training steps: KL warm-up.

β rises linearly from just above 0 to ``beta`` over ``kl_warmup`` epochs
(Bowman et al. 2016, "Generating Sentences from a Continuous Space";
Sønderby et al. 2016, "Ladder Variational Autoencoders").
"""

from __future__ import annotations

from pyrovae.config import RunConfig


def kl_weight(config: RunConfig, step: int, steps_per_epoch: int) -> float:
    """β at global step ``step``: linear from just above 0 to ``beta`` over the warm-up."""
    warmup_steps = config.train.kl_warmup * steps_per_epoch
    if warmup_steps == 0:
        return config.train.beta
    return config.train.beta * min(1.0, (step + 1) / warmup_steps)
