"""One call of each component on a small batch, checked against its contract.

A component's contract (docs/plugins.md) fixes the shapes of what it returns:
the network's encoder one feature vector per data point and its decoder one
data point of parameters per code, the prior a distribution over one code
(event ``(n_latent,)``, no batch), the guide q(z|x) one code per data point
(batch ``(batch,)``, event ``(n_latent,)``), the likelihood one whole data
point per code (batch ``(batch,)``, event the data shape). A plugin that breaks
it (a likelihood without ``.to_event``, a prior of another size, a decoder of
another shape) would fail inside Pyro's first step with a traceback about
plates and sites; :func:`check_contract` finds it before training, from one
call on two data points, and names the component at fault.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyro.distributions as dist
import torch

from pyrovae.errors import ConfigError, first_line
from pyrovae.model.conditional import LabelledVAE
from pyrovae.model.spec import component_class
from pyrovae.model.vae import VAE
from pyrovae.runtime import eval_mode, module_device

#: Data points of the probe batch (two, so that a batch dimension cannot hide as 1).
PROBE_POINTS = 2


def check_contract(vae: VAE, x: torch.Tensor | None = None) -> None:
    """Raise :class:`ConfigError` naming the component whose output breaks its contract's
    shapes, or whose call fails, on the probe batch ``x`` (two data points on the
    [0, 1] scale, e.g. the first test points; zeros by default). Draws no random
    numbers; the weights and batch-norm statistics are left as they are."""
    device = module_device(vae)
    x = _probe_batch(vae, x, device)
    n, latent = x.shape[0], (vae.n_latent,)
    network = component_class(vae.config, "network")
    with eval_mode(vae), torch.no_grad():
        features = _called(network, "its encoder", lambda: vae.encoder(x))
        _check_tensor(network, "its encoder", features, f"({n}, n_features)",
                      features.dim() == 2 and features.shape[0] == n)  # fmt: skip
        z = torch.zeros(n, *latent, device=device)
        if not isinstance(vae, LabelledVAE):  # its decoder also reads the label
            decoded = _called(network, "its decoder", lambda: vae.decoder(z))
            _check_tensor(network, "its decoder", decoded, str((n, *vae.data_shape)),
                          tuple(decoded.shape) == (n, *vae.data_shape))  # fmt: skip
        if vae.has_prior:
            prior = _called(vae.prior, "", vae.prior.__call__)
            _check_shapes(vae.prior, prior, (), latent)
        qz = _called(vae.guide_net, "", lambda: _posterior(vae, x))
        _check_shapes(vae.guide_net, qz, (n,), latent)
        px = _called(vae.likelihood, "", lambda: vae.px(z))
        _check_shapes(vae.likelihood, px, (n,), vae.data_shape)


def _probe_batch(vae: VAE, x: torch.Tensor | None, device: torch.device) -> torch.Tensor:
    """``x`` (two points, one repeated when it is alone) on ``device``, or zeros."""
    if x is None:
        return torch.zeros(PROBE_POINTS, *vae.data_shape, device=device)
    x = x[:PROBE_POINTS].to(device)
    return x.repeat(PROBE_POINTS, *([1] * (x.dim() - 1))) if x.shape[0] == 1 else x


def _posterior(vae: VAE, x: torch.Tensor) -> dist.TorchDistribution:
    """q(z|x), given a label for the models that condition on one."""
    if isinstance(vae, LabelledVAE):
        return vae.qz(x, torch.zeros(x.shape[0], dtype=torch.long, device=x.device))
    return vae.qz(x)


def _called(component: Any, part: str, call: Callable[[], Any]) -> Any:
    """What ``call`` returns, or a one-line :class:`ConfigError` naming ``component``
    (and ``part`` of it, e.g. ``"its encoder"``)."""
    who = f"{component.title()}{' (' + part + ')' if part else ''}"
    try:
        made = call()
    except ConfigError:
        raise
    except Exception as err:
        raise ConfigError(
            f"{who} failed on a probe batch of two data points before training: "
            f"{type(err).__name__}: {first_line(err, 160)}"
        ) from None
    if part and not isinstance(made, torch.Tensor):
        raise ConfigError(f"{who} must return a tensor, got {type(made).__name__}")
    if not part and not isinstance(made, torch.distributions.Distribution):
        raise ConfigError(f"{who} must return a distribution, got {type(made).__name__}")
    return made


def _check_tensor(component: Any, part: str, made: torch.Tensor, want: str, ok: bool) -> None:
    """Refuse a network's output of another shape than ``want``."""
    if not ok:
        raise ConfigError(
            f"{component.title()} ({part}) returns shape {tuple(made.shape)} for two data "
            f"points; its contract is {want}"
        )


def _check_shapes(
    component: Any,
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
