"""Tests of pyrovae/reports/explore.py: spherical interpolation, the manifold grid's
codes, the ordering of dimensions by KL, and the class names of the legends."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from pyrovae.data.classes import class_name, class_names
from pyrovae.model.spec import model_config
from pyrovae.model.vae import VAE
from pyrovae.reports.encode import encode_points
from pyrovae.reports.explore import (
    GRID_SIDE,
    QUANTILE_RANGE,
    activity,
    interpolation_pairs,
    manifold_codes,
    slerp,
)


def test_slerp_runs_on_the_great_circle_between_its_ends():
    z0, z1 = torch.tensor([3.0, 0.0, 0.0]), torch.tensor([0.0, 0.0, 3.0])
    t = torch.linspace(0, 1, 5)
    arc = slerp(z0, z1, t)
    torch.testing.assert_close(arc[0], z0)
    torch.testing.assert_close(arc[-1], z1)
    torch.testing.assert_close(arc.norm(dim=1), torch.full((5,), 3.0))  # the line would dip to 2.1
    torch.testing.assert_close(arc[2], torch.tensor([1.0, 0.0, 1.0]) * 3 / 2**0.5)


def test_interpolation_pairs_join_the_first_points_of_two_classes():
    labels = torch.tensor([3, 1, 1, 0, 2, 3, 0])
    assert interpolation_pairs(labels, 7) == [(3, 1), (4, 0)]  # 0 to 1, 2 to 3
    assert interpolation_pairs(None, 5) == [(0, 1), (2, 3)]
    assert interpolation_pairs(torch.zeros(6, dtype=torch.long), 6) == [(0, 1), (2, 3), (4, 5)]


def _vae(latent_dim: int, prior: str = "normal") -> VAE:
    return VAE(model_config(data_shape=(1, 4, 4), hidden=(8,), latent_dim=latent_dim, prior=prior))


def test_a_2d_manifold_is_a_grid_of_the_priors_quantiles():
    codes, xticks, yticks, xname, _ = manifold_codes(_vae(2), torch.randn(10, 2))
    assert codes.shape == (GRID_SIDE**2, 2) and "prior quantile" in xname
    lo, hi = (float(Normal(0.0, 1.0).icdf(torch.tensor(q))) for q in QUANTILE_RANGE)
    torch.testing.assert_close(codes[0], torch.tensor([lo, hi]))  # top left: z2 high
    torch.testing.assert_close(codes[-1], torch.tensor([hi, lo]))
    assert xticks[0] == "0.05" and yticks[0] == "0.95"


def test_a_learned_priors_quantiles_are_estimated_from_its_draws():
    codes, *_ = manifold_codes(_vae(2, prior="mog"), torch.randn(10, 2))
    assert codes.shape == (GRID_SIDE**2, 2) and bool(torch.isfinite(codes).all())


def test_a_wider_latent_is_gridded_along_the_principal_directions_of_the_means():
    means = torch.randn(500, 4) * torch.tensor([3.0, 1.0, 0.1, 0.1]) + 1.0
    codes, *_, xname, yname = manifold_codes(_vae(4), means)
    assert "principal direction 1" in xname and "principal direction 2" in yname
    spread = (codes - means.mean(0)).abs().amax(0)  # 2 SDs along the first two axes
    assert spread[0] == pytest.approx(6.0, rel=0.15) and spread[1] == pytest.approx(2.0, rel=0.2)
    assert float(spread[2:].max()) < 0.5


def test_a_2d_autoencoder_is_gridded_along_its_means_having_no_prior():
    """Its manifold took the prior's quantiles, failing after two figures were written."""
    import dataclasses

    from pyrovae.model.autoencoder import Autoencoder

    config = model_config(data_shape=(1, 4, 4), hidden=(8,), latent_dim=2)
    ae = Autoencoder(dataclasses.replace(config, kind="ae"))
    codes, *_, xname, _ = manifold_codes(ae, torch.randn(50, 2))
    assert codes.shape == (GRID_SIDE**2, 2) and "principal direction 1" in xname


def test_dimensions_are_ranked_by_their_average_kl():
    vae = _vae(3)
    x = torch.rand(20, 1, 4, 4)
    encoding = encode_points(vae, x)
    score, measure = activity(vae, x, encoding)
    qz = vae.qz(x)
    exact = kl_divergence(Normal(qz.mean, qz.stddev), Normal(0.0, 1.0)).mean(0)
    torch.testing.assert_close(score.float(), exact.detach(), rtol=1e-5, atol=1e-6)
    assert measure == "average KL (nats)"


def test_a_flow_guide_is_ranked_by_the_variance_of_its_means():
    vae = VAE(model_config(data_shape=(1, 4, 4), hidden=(8,), latent_dim=3, guide="iaf", flows=1))
    x = torch.rand(20, 1, 4, 4)
    encoding = encode_points(vae, x, draws=20)
    score, measure = activity(vae, x, encoding)
    assert measure == "variance of posterior means"
    torch.testing.assert_close(score, encoding.mean.double().var(0))


def test_class_names():
    assert class_names("fashion-mnist")[9] == "Ankle boot"
    assert class_names("Fashion_MNIST") == class_names("fashion-mnist")
    assert class_names("digits") == tuple("0123456789")
    assert class_names("data/mine.npz") is None
    assert class_name("mine.npz", 3) == "3" and class_name("fashion-mnist", 0) == "T-shirt/top"
