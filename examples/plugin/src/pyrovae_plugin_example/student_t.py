"""A Student-t prior: independent heavy-tailed coordinates, a prior that leaves room
for codes far from the origin."""

from __future__ import annotations

import pyro.distributions as dist
import torch

from pyrovae.components import Option, positive_float
from pyrovae.model.context import ModelContext
from pyrovae.model.priors import Prior


class StudentTPrior(Prior):
    """Independent Student-t coordinates with ``dof`` degrees of freedom."""

    name = "student-t"
    options = (Option("dof", 5.0, "Degrees of freedom of each coordinate.", positive_float),)
    temperable = True  # the draws are scaled by the temperature (see sample)

    dof: torch.Tensor  # a buffer: saved with the run, moved with the model

    def __init__(self, context: ModelContext, *, dof: float = 5.0) -> None:
        super().__init__(context)
        self.register_buffer("dof", torch.tensor(float(dof)))

    def forward(self) -> dist.TorchDistribution:
        loc = torch.zeros(self.n_latent, device=self.dof.device)
        return dist.StudentT(self.dof, loc, torch.ones_like(loc)).to_event(1)

    def sample(self, n: int, temperature: float = 1.0) -> torch.Tensor:
        return temperature * self().sample((n,))
