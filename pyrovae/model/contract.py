"""One call of each component on a small batch, checked against its contract.

A component's contract (:doc:`plugins`) fixes the shapes of what it returns:
the prior a distribution over one code (event ``(n_latent,)``, no batch), the
guide q(z|x) one code per data point (batch ``(batch,)``, event
``(n_latent,)``), the likelihood one whole data point per code (batch
``(batch,)``, event the data shape). A plugin that breaks it (a likelihood
without ``.to_event``, a prior of another size) would fail inside Pyro's first
step with a traceback about plates and sites; :func:`check_contract` finds it
before training, from one call on two points of zeros, and names the component.
"""

from __future__ import annotations

from collections.abc import Callable

import pyro.distributions as dist
import torch

from pyrovae.components import Component
from pyrovae.errors import ConfigError, first_line
from pyrovae.model.conditional import ConditionalVAE
from pyrovae.model.vae import VAE
from pyrovae.runtime import eval_mode, module_device

#: Data points of the probe batch (two, so that a batch dimension cannot hide as 1).
PROBE_POINTS = 2


def check_contract(vae: VAE) -> None:
    """Raise :class:`ConfigError` naming the component whose distribution breaks its
    contract's shapes, or whose call fails, on a probe batch of zeros; the model's
    weights and batch-norm statistics are left as they are."""
    device = module_device(vae)
    n, latent = PROBE_POINTS, (vae.n_latent,)
    with eval_mode(vae), torch.no_grad():
        if vae.has_prior:
            prior = _called(vae.prior, vae.prior.__call__)
            _check_shapes(vae.prior, prior, (), latent)
        x = torch.zeros(n, *vae.data_shape, device=device)
        qz = _called(vae.guide_net, lambda: _posterior(vae, x))
        _check_shapes(vae.guide_net, qz, (n,), latent)
        px = _called(vae.likelihood, lambda: vae.px(torch.zeros(n, *latent, device=device)))
        _check_shapes(vae.likelihood, px, (n,), vae.data_shape)


def _posterior(vae: VAE, x: torch.Tensor) -> dist.TorchDistribution:
    """q(z|x), given a label for the models that condition on one."""
    if isinstance(vae, ConditionalVAE):
        return vae.qz(x, torch.zeros(x.shape[0], dtype=torch.long, device=x.device))
    return vae.qz(x)


def _called(
    component: Component, call: Callable[[], dist.TorchDistribution]
) -> dist.TorchDistribution:
    """What ``call`` returns, or a one-line :class:`ConfigError` naming ``component``."""
    try:
        made = call()
    except ConfigError:
        raise
    except Exception as err:
        raise ConfigError(
            f"{component.title()} failed on a probe batch before training: "
            f"{type(err).__name__}: {first_line(err, 160)}"
        ) from None
    if not isinstance(made, torch.distributions.Distribution):
        raise ConfigError(
            f"{component.title()} must return a distribution, got {type(made).__name__}"
        )
    return made


def _check_shapes(
    component: Component,
    made: torch.distributions.Distribution,
    batch: tuple[int, ...],
    event: tuple[int, ...],
) -> None:
    """Refuse ``made`` unless its batch and event shapes are ``batch`` and ``event``."""
    got_batch, got_event = tuple(made.batch_shape), tuple(made.event_shape)
    if (got_batch, got_event) == (batch, event):
        return
    dims = "dimension" if len(event) == 1 else f"{len(event)} dimensions"
    hint = (
        f"; make the last {dims} the event with .to_event({len(event)})"
        if got_batch + got_event == batch + event
        else ""
    )
    raise ConfigError(
        f"{component.title()} returns a distribution of batch shape {got_batch} and event "
        f"shape {got_event}; its contract is batch {batch} and event {event}{hint}"
    )
