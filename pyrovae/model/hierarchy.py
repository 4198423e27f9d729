"""What the two-level prior and guide share: the split of the latent vector into
z = [z1, z2], with z2 the top level of ``--top-dim`` units, and the transform that
draws z2 first and then z1 given z2.

This is the hierarchical VAE of Tomczak & Welling (2018, "VAE with a VampPrior",
Sec. 3.2; after the top-down inference of Sønderby et al. 2016, "Ladder Variational
Autoencoders"): p(z) = p(z2) p(z1|z2) and q(z|x) = q(z2|x) q(z1|x, z2), Gaussian
at each level, and the decoder reads both levels, p(x|z1, z2). Both densities are
one standard Normal pushed through :class:`TopDownAffine`, so they are
distributions over one vector z with an exact density: importance sampling, ELBO
surgery, PSIS and NUTS see one latent site, as for any other prior and guide.

A component that declares :data:`TOP_DIM` shares the command line's ``--top-dim``
with every other one that does (the hierarchical prior and the ladder guide).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch.distributions import constraints
from torch.distributions.transforms import Transform

from pyrovae.components import Option, positive_int
from pyrovae.errors import ConfigError
from pyrovae.model.context import ModelContext

#: z2 -> (loc, scale) of the lower level z1, broadcasting over leading dimensions.
Conditional = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _top_dim(value: Any) -> int | None:
    return None if value is None else positive_int(value)


TOP_DIM = Option(
    "top_dim",
    None,
    "Units of the top latent level z2 of z = [z1, z2] (default: half of --latent-dim).",
    _top_dim,
    "INTEGER",
)


def top_size(n_latent: int, top_dim: int | None) -> int:
    """The size of z2: ``top_dim``, or half of ``n_latent`` (at least 1) when not given."""
    return max(1, n_latent // 2) if top_dim is None else top_dim


def check_top_dim(options: Mapping[str, Any], context: ModelContext, title: str) -> None:
    """Both levels need at least one unit: 1 <= top_dim < latent_dim."""
    n_latent = context.n_latent
    n_top = top_size(n_latent, options[TOP_DIM.name])
    if n_latent < 2 or n_top >= n_latent:
        raise ConfigError(
            f"{title} splits z into two levels: {TOP_DIM.flag} must be less than "
            f"--latent-dim ({n_latent}) and --latent-dim at least 2, got {TOP_DIM.flag} {n_top}"
        )


class TopDownAffine(Transform):
    """ε ~ N(0, I) -> z = [z1, z2]: z2 = μ2 + σ2 ε2, then z1 = μ1(z2) + σ1(z2) ε1.

    Triangular in blocks (z2 depends on ε2 alone, z1 on ε1 and z2), so the
    inverse is closed form at any z, ε2 = (z2 − μ2)/σ2 and
    ε1 = (z1 − μ1(z2))/σ1(z2), and log|det ∂z/∂ε| = Σ log σ2 + Σ log σ1(z2).

    Parameters
    ----------
    top_loc, top_scale
        μ2 and σ2, ``(..., n_top)``.
    bottom
        z2 ``(..., n_top)`` -> (μ1, σ1), each ``(..., n_latent - n_top)``.
    n_top
        The size of z2, the last ``n_top`` coordinates of z.
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(
        self,
        top_loc: torch.Tensor,
        top_scale: torch.Tensor,
        bottom: Conditional,
        n_top: int,
        cache_size: int = 1,
    ) -> None:
        super().__init__(cache_size=cache_size)
        self.top_loc = top_loc
        self.top_scale = top_scale
        self.bottom = bottom
        self.n_top = n_top
        # log|det| of the last (ε, z) pair, so that log_prob right after a draw or an
        # inverse does not run the z1 network a second time.
        self._cached_log_det: tuple[torch.Tensor, torch.Tensor] | None = None

    def with_cache(self, cache_size: int = 1) -> TopDownAffine:
        if self._cache_size == cache_size:
            return self
        return TopDownAffine(self.top_loc, self.top_scale, self.bottom, self.n_top, cache_size)

    def _log_det(self, z: torch.Tensor, scale1: torch.Tensor) -> torch.Tensor:
        log_det = self.top_scale.log().sum(-1) + scale1.log().sum(-1)  # (...)
        self._cached_log_det = (z, log_det)
        return log_det

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        eps1, eps2 = x[..., : -self.n_top], x[..., -self.n_top :]
        z2 = self.top_loc + self.top_scale * eps2  # (..., n_top)
        loc1, scale1 = self.bottom(z2)  # (..., n_bottom)
        z = _joined(loc1 + scale1 * eps1, z2)  # (..., n_latent)
        self._log_det(z, scale1)
        return z

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        z1, z2 = y[..., : -self.n_top], y[..., -self.n_top :]
        loc1, scale1 = self.bottom(z2)
        self._log_det(y, scale1)
        return _joined((z1 - loc1) / scale1, (z2 - self.top_loc) / self.top_scale)

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self._cached_log_det is not None and self._cached_log_det[0] is y:
            return self._cached_log_det[1]
        _, scale1 = self.bottom(y[..., -self.n_top :])
        return self._log_det(y, scale1)


def _joined(lower: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
    """[lower, top] along the last dimension, their leading dimensions broadcast."""
    lead = torch.broadcast_shapes(lower.shape[:-1], top.shape[:-1])
    return torch.cat([lower.expand(*lead, -1), top.expand(*lead, -1)], dim=-1)
