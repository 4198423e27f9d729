"""The posterior predictive check of ``diagnose`` on incomplete data (NaN is missing)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pyrovae.model.spec import model_config
from pyrovae.model.vae import VAE
from pyrovae.reports.diagnose import _predictive_check


def test_the_mean_intensity_is_over_observed_values():
    vae = VAE(model_config(data_shape=(1, 4, 4), hidden=(8,), latent_dim=2, missing=True))
    x = torch.rand(3, 1, 4, 4)
    x[0, 0, :2] = torch.nan
    check = _predictive_check(vae, x, torch.randn(5, 3, 2))
    assert np.isfinite(check.observed).all() and np.isfinite(check.replicated).all()
    assert check.observed[0] == pytest.approx(x[0, 0, 2:].mean().item(), rel=1e-6)
