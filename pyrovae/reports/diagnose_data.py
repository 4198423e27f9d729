"""The ``InferenceData`` that ``pyrovae diagnose`` writes, laid out so that every ArviZ
function takes it with no extra arguments.

Groups (ArviZ's schema, https://python.arviz.org/en/stable/schema/schema.html):

- ``posterior``: ``z`` ``(chain, draw, datapoint, latent)``, the NUTS reference
  p(z|x) with the decoder fixed, several chains (R-hat and ESS are defined);
- ``log_likelihood``: ``x`` ``(chain, draw, datapoint)``, log p(x_i | z) summed
  over the pixels at those draws. With one local code per image,
  leave-one-out of ``x_i`` leaves z_i with its prior, so ``az.loo``'s elpd_i
  estimates log p(x_i) itself (by PSIS on the harmonic mean; its k̂ says
  whether that estimate holds);
- ``posterior_predictive`` and ``observed_data``: ``x``, replicated images
  x ~ p(x|z) at NUTS draws and the observed images of the same points;
- ``variational_posterior``: ``z`` ``(chain, draw, datapoint, latent)``, draws of
  the amortized q(z|x) (one chain of independent draws);
- ``sample_stats``: ``log_weight`` ``(chain, draw, datapoint)``, log p(x, z) - log
  q(z|x) at q's draws, and ``pareto_k`` ``(datapoint,)`` (NaN: exact);
- ``constant_data``: ``label`` ``(datapoint,)`` where the data set has labels.

Without a NUTS reference (``nuts=0``) the first four groups are absent. The
compact form (the default) keeps float32 values, at most
:data:`COMPACT_POINTS` points and :data:`COMPACT_Q_DRAWS` draws of q(z|x) and
:data:`COMPACT_PPC_DRAWS` replications per chain; the full form keeps every
draw, with float64 log weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from pyrovae.sites import LATENT

if TYPE_CHECKING:
    import arviz as az

    from pyrovae.model.vae import VAE

#: The observed site's name in ``log_likelihood``, ``posterior_predictive`` and
#: ``observed_data`` (ArviZ pairs them by name).
OBSERVED = "x"

#: The group that holds the draws of the amortized q(z|x).
VARIATIONAL_GROUP = "variational_posterior"

COMPACT_POINTS = 100
COMPACT_Q_DRAWS = 100
COMPACT_PPC_DRAWS = 25


@dataclass
class DiagnosisDraws:
    """What :func:`inference_data` stores, as computed.

    Attributes
    ----------
    x
        ``(n, *data_shape)`` observed points on [0, 1].
    q_z, log_weight, pareto_k
        ``(draws, n, L)`` draws of q(z|x), ``(draws, n)`` their log weights and
        ``(n,)`` k̂ (NaN where exact).
    labels
        ``(n,)`` or ``None``.
    nuts_z
        ``(chain, draw, M, L)`` NUTS draws of the first M points, or ``None``.
    """

    x: torch.Tensor
    q_z: torch.Tensor
    log_weight: torch.Tensor
    pareto_k: np.ndarray
    labels: torch.Tensor | None
    nuts_z: np.ndarray | None


def inference_data(
    vae: VAE, draws: DiagnosisDraws, attrs: dict[str, str], *, full: bool = False
) -> az.InferenceData:
    """The ``InferenceData`` of the module docstring; ``attrs`` become its global
    attributes (strings, as netCDF keeps them)."""
    import arviz as az

    points = draws.x.shape[0] if full else min(draws.x.shape[0], COMPACT_POINTS)
    q_draws = draws.q_z.shape[0] if full else min(draws.q_z.shape[0], COMPACT_Q_DRAWS)
    real = np.float64 if full else np.float32
    groups: dict[str, Any] = {
        VARIATIONAL_GROUP: _dataset(
            {LATENT: _chain(draws.q_z[:q_draws, :points], np.float32)}, ("latent",)
        ),
        "sample_stats": _dataset(
            {"log_weight": _chain(draws.log_weight[:, :points], real)},
            extra={"pareto_k": (("datapoint",), draws.pareto_k[:points].astype(real))},
        ),
    }
    if draws.labels is not None:
        labels = draws.labels[:points].cpu().numpy()
        groups["constant_data"] = _dataset({}, extra={"label": (("datapoint",), labels)})
    if draws.nuts_z is not None:
        groups.update(_reference_groups(vae, draws.x, draws.nuts_z, full))
    return az.InferenceData(attrs=attrs, **groups)


@torch.no_grad()
def _reference_groups(vae: VAE, x: torch.Tensor, nuts_z: np.ndarray, full: bool) -> dict[str, Any]:
    """``posterior``, ``log_likelihood``, ``posterior_predictive`` and ``observed_data``
    of the NUTS points."""
    chains, n_draws, m, _ = nuts_z.shape
    x_m = x[:m]  # (M, *data_shape)
    z = torch.as_tensor(nuts_z, dtype=x.dtype, device=x.device)  # (chain, draw, M, L)
    # Summed over the observed pixels (NaN marks a missing one in incomplete data).
    log_lik = vae.log_px(x_m, z.flatten(0, 1)).reshape(chains, n_draws, m)
    kept = n_draws if full else min(n_draws, COMPACT_PPC_DRAWS)
    replicated = vae.px(z[:, :kept].flatten(0, 1)).sample()  # (chain * kept, M, *shape)
    replicated = replicated.reshape(chains, kept, *x_m.shape)
    pixel_dims = _pixel_dims(x_m.ndim - 1)
    return {
        "posterior": _dataset({LATENT: nuts_z.astype(np.float32)}, ("latent",)),
        "log_likelihood": _dataset({OBSERVED: log_lik.double().cpu().numpy()}),
        "posterior_predictive": _dataset(
            {OBSERVED: replicated.cpu().numpy().astype(np.float32)}, pixel_dims
        ),
        "observed_data": _dataset(
            {}, extra={OBSERVED: (("datapoint", *pixel_dims), x_m.cpu().numpy())}
        ),
    }


def _chain(values: torch.Tensor, dtype: Any) -> np.ndarray:
    """Independent draws ``(draw, ...)`` as one chain ``(1, draw, ...)``."""
    return values.detach().double().cpu().numpy().astype(dtype)[None]


def _pixel_dims(ndim: int) -> tuple[str, ...]:
    return ("channel", "height", "width") if ndim == 3 else tuple(f"x_dim_{i}" for i in range(ndim))


def _dataset(
    draws: dict[str, np.ndarray],
    trailing: tuple[str, ...] = (),
    extra: dict[str, tuple[tuple[str, ...], np.ndarray]] | None = None,
) -> Any:
    """An ``xarray.Dataset`` of ``(chain, draw, datapoint, *trailing)`` arrays and
    ``extra`` variables with their own dims, with integer coordinates."""
    import xarray as xr

    variables: dict[str, Any] = {
        name: (("chain", "draw", "datapoint", *trailing), value) for name, value in draws.items()
    }
    variables.update(extra or {})
    dataset = xr.Dataset(variables)
    return dataset.assign_coords({dim: np.arange(size) for dim, size in dataset.sizes.items()})
