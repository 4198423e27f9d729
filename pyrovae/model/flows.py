"""What flow guides and the flow prior share: their two options and the autoregressive
network (MADE; Germain et al. 2015, "MADE: Masked Autoencoder for Distribution
Estimation") that autoregressive layers use.

A component that declares :data:`FLOWS` and :data:`FLOW_HIDDEN` shares the
command line's ``--flows`` and ``--flow-hidden`` with every other one that does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import torch
from torch import nn

from pyrovae.components import Option, positive_int, sizes
from pyrovae.errors import ConfigError
from pyrovae.model.context import ModelContext

#: Flow layers are built one by one; past this a typo, not a model.
MAX_FLOWS = 1024


def _flow_count(value: Any) -> int:
    n = positive_int(value)
    if n > MAX_FLOWS:
        raise ValueError(f"must be at most {MAX_FLOWS}, got {n}")
    return n


FLOWS = Option("flows", 4, "Number of flow layers.", _flow_count, "INTEGER")
FLOW_HIDDEN = Option(
    "flow_hidden", (128,), "Hidden sizes of each flow layer's network, e.g. 128 or 256,256.", sizes
)


def check_made_widths(options: Mapping[str, Any], context: ModelContext, title: str) -> None:
    """A MADE layer narrower than its input cannot connect every output: refuse it."""
    hidden = options[FLOW_HIDDEN.name]
    if min(hidden) < context.n_latent:
        raise ConfigError(
            f"{FLOW_HIDDEN.flag} sizes of {title} must be at least --latent-dim "
            f"({context.n_latent}), got {','.join(map(str, hidden))}"
        )


def natural_order(n_latent: int) -> torch.LongTensor:
    """The identity order inside a MADE: the reversals between layers are what lets
    every coordinate depend on every other one."""
    return cast(torch.LongTensor, torch.arange(n_latent))


def made(n_latent: int, hidden: Sequence[int]) -> nn.Module:
    """A MADE network in the natural order."""
    from pyro.nn import AutoRegressiveNN

    return AutoRegressiveNN(n_latent, list(hidden), permutation=natural_order(n_latent))


def conditional_made(n_latent: int, n_context: int, hidden: Sequence[int]) -> nn.Module:
    """A MADE network conditioned on a context vector, in the natural order."""
    from pyro.nn import ConditionalAutoRegressiveNN

    return ConditionalAutoRegressiveNN(
        n_latent, n_context, list(hidden), permutation=natural_order(n_latent)
    )
