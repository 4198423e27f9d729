"""The imputation estimator against probabilistic PCA, whose conditional p(x_mis | x_obs)
is Gaussian in closed form."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import MultivariateNormal

from pyrovae.errors import DataError
from pyrovae.inference import impute as impute_module
from pyrovae.inference.impute import impute_batch, rmse_over_missing, score_imputation
from pyrovae.model.ppca import PPCA, linear_gaussian_vae

N_DIMS, N_LATENT = 6, 2


def _exact_posterior(ppca: PPCA):
    """p(z | x_obs) for each point, as the guide the estimator asks for: pPCA with the rows
    of W of missing dimensions set to 0 (which drops them from M = W^T W + s^2 I)."""

    def posterior(vae, x, observed):
        keep = observed.reshape(x.shape[0], -1).to(x.dtype)  # (B, D)
        w = keep[:, :, None] * ppca.weight  # (B, D, L)
        m = w.transpose(1, 2) @ w + ppca.sigma**2 * torch.eye(N_LATENT)  # (B, L, L)
        centred = torch.nan_to_num(x.reshape(x.shape[0], -1)) - ppca.bias
        rhs = w.transpose(1, 2) @ (keep * centred)[:, :, None]  # (B, L, 1)
        loc = torch.linalg.solve(m, rhs)[..., 0]
        return MultivariateNormal(loc, covariance_matrix=ppca.sigma**2 * torch.linalg.inv(m))

    return posterior


def _conditional(ppca: PPCA, point: torch.Tensor, keep: torch.Tensor):
    """Exact mean and standard deviation of the missing values of ``point``."""
    sub = PPCA(ppca.weight[keep], ppca.bias[keep], ppca.sigma)
    post = sub.posterior(point[keep][None])
    w = ppca.weight[~keep]
    mean = w @ post.loc[0] + ppca.bias[~keep]
    var = (w @ post.covariance_matrix[0] @ w.T).diagonal() + ppca.sigma**2
    return mean, var.sqrt()


def _data(ppca: PPCA, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    truth = ppca.sample(n, torch.Generator().manual_seed(3)).reshape(n, 1, 1, N_DIMS)
    observed = torch.rand(truth.shape, generator=torch.Generator().manual_seed(4)) < 0.5
    observed[..., 0] = True
    return truth, observed, torch.where(observed, truth, torch.nan)


@pytest.mark.parametrize("refine", ["none", "sir"])
def test_moments_match_the_exact_conditional_of_ppca(monkeypatch, refine):
    ppca = PPCA.random(N_DIMS, N_LATENT, sigma=0.5)
    vae = linear_gaussian_vae(ppca)
    monkeypatch.setattr(impute_module, "posterior", _exact_posterior(ppca))
    truth, observed, x = _data(ppca, 4)
    k = 4000
    result = impute_batch(vae, x, particles=k, refine=refine)
    # With q the exact posterior, the weights p(x_obs, z) / q(z|x_obs) = p(x_obs) are equal:
    # the masked joint is right, and importance sampling changes nothing.
    torch.testing.assert_close(result.ess, torch.full((4,), float(k)), rtol=1e-3, atol=0)
    flat = x.reshape(4, -1)
    for i in range(4):
        keep = observed[i].reshape(-1)
        mean, std = _conditional(ppca, flat[i], keep)
        got = result.mean[i].reshape(-1)[~keep]
        stderr = result.mean_mc_stderr[i].reshape(-1)[~keep]
        assert ((got - mean).abs() <= 4 * stderr).all(), (got, mean, stderr)
        # The spread of E[x|z] over the draws is estimated from k draws: its variance to
        # within 4 relative standard errors sqrt(2 / k) of a sample variance.
        between = std.square() - ppca.sigma**2
        got_var = result.std[i].reshape(-1)[~keep].square()
        assert ((got_var - std.square()).abs() <= 4 * math.sqrt(2 / k) * between).all()
        assert torch.equal(result.mean[i].reshape(-1)[keep], flat[i][keep])


def test_intervals_cover_90_percent_under_the_exact_posterior(monkeypatch):
    ppca = PPCA.random(N_DIMS, N_LATENT, sigma=0.5)
    vae = linear_gaussian_vae(ppca)
    monkeypatch.setattr(impute_module, "posterior", _exact_posterior(ppca))
    truth, observed, x = _data(ppca, 200)
    result = impute_batch(vae, x, particles=400, draws=5)
    score = score_imputation(result, truth)
    assert abs(score.coverage - 0.9) <= 4 * score.coverage_stderr, score
    assert result.draws is not None and result.draws.shape == (5, *x.shape)
    assert torch.equal(result.draws[:, observed], truth[observed].expand(5, -1))


def test_rmse_over_missing_values_only():
    truth = torch.zeros(3, 4)
    filled = torch.tensor([[9.0, 1, 0, 0], [9.0, 0, 0, 0], [9.0, 2, 2, 0]])
    observed = torch.tensor(
        [[True, False, True, True], [True, False, True, True]] + [[True, False, False, True]]
    )
    rmse, stderr = rmse_over_missing(filled, truth, observed)
    assert rmse == pytest.approx(math.sqrt((1 + 0 + 4 + 4) / 4))
    assert stderr > 0


def test_a_point_with_no_observed_value_is_refused():
    vae = linear_gaussian_vae(PPCA.random(N_DIMS, N_LATENT))
    x = torch.full((2, 1, 1, N_DIMS), torch.nan)
    x[0, ..., 0] = 0.0
    with pytest.raises(DataError, match="data point 1 has every value missing"):
        impute_batch(vae, x)


@pytest.mark.slow
def test_imputation_beats_mean_fill_on_digits(tmp_path):
    import pyrovae
    from pyrovae.data.digits import load_digits
    from pyrovae.inference.impute import impute, mean_over_missing

    data = load_digits()
    generator = torch.Generator().manual_seed(0)
    train = data.train.clone()
    train[torch.rand(train.shape, generator=generator) < 0.5] = torch.nan
    result = pyrovae.train(
        data=train, out=tmp_path / "run", epochs=40, likelihood="bernoulli",
        hidden=(64,), latent_dim=8, progress=False, log=lambda _: None,
    )  # fmt: skip
    truth = data.test
    observed = torch.rand(truth.shape, generator=generator) >= 0.5
    observed.flatten(1)[:, 0] = True
    x = torch.where(observed, truth, torch.nan)
    mean_fill = torch.where(observed, truth, train.nanmean(0))
    for refine in ("none", "sir"):
        imputation = impute(result.vae, x, particles=200, refine=refine)
        # Paired over the same missing values: the difference of squared errors per point.
        gain = (imputation.mean - truth).square() - (mean_fill - truth).square()
        difference, stderr = mean_over_missing(gain, observed)
        assert difference + 4 * stderr < 0, (refine, difference, stderr)
