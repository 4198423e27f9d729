"""Tests of pyrovae/reports/encode.py and ``pyrovae.encode``: the moments of q(z|x)
against probabilistic PCA's exact posterior, and one-line errors for bad points."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pyrovae
from pyrovae.errors import ConfigError, DataError
from pyrovae.model.guides.base import GUIDES
from pyrovae.model.ppca import PPCA, linear_gaussian_vae
from pyrovae.model.spec import model_config
from pyrovae.model.vae import VAE
from pyrovae.reports.encode import Encoding, check_points, encode_points


def exact_posterior_guide(n_dims: int = 12, n_latent: int = 2, n: int = 10):
    """A PPCA VAE whose mean-field guide is N(exact posterior mean, exact marginal sds)."""
    ppca = PPCA.random(n_dims, n_latent, sigma=0.5, seed=0)
    vae = linear_gaussian_vae(ppca)
    x = ppca.sample(n, torch.Generator().manual_seed(1))  # (n, n_dims)
    posterior = ppca.posterior(x)
    m = ppca.weight.T @ ppca.weight + ppca.sigma**2 * torch.eye(n_latent)
    a = torch.linalg.solve(m, ppca.weight.T)  # (n_latent, n_dims): the posterior mean map
    sd = posterior.covariance_matrix[0].diagonal().sqrt()
    head = vae.guide_net
    with torch.no_grad():
        vae.encoder.net.weight.zero_()
        vae.encoder.net.bias.zero_()
        vae.encoder.net.weight[:n_latent] = a
        vae.encoder.net.bias[:n_latent] = -a @ ppca.bias
        head.loc.weight.zero_()
        head.loc.bias.zero_()
        head.loc.weight[:, :n_latent] = torch.eye(n_latent)
        head.raw_scale.weight.zero_()
        head.raw_scale.bias.copy_(torch.log(torch.expm1(sd - head.min_scale)))
    return vae, x.reshape(n, 1, 1, n_dims), posterior


def test_encoding_gives_the_exact_posterior_moments_of_ppca():
    vae, x, posterior = exact_posterior_guide()
    labels = torch.arange(x.shape[0])
    encoding = encode_points(vae, x, labels, batch_size=3)  # batches of 3, 3, 3, 1
    torch.testing.assert_close(encoding.mean, posterior.loc, atol=1e-4, rtol=1e-4)
    exact_sd = posterior.covariance_matrix.diagonal(dim1=-2, dim2=-1).sqrt()
    torch.testing.assert_close(encoding.std, exact_sd, atol=1e-5, rtol=1e-5)
    assert encoding.method == "closed form" and encoding.mean_se is None
    assert torch.equal(encoding.labels, labels)


def test_a_flow_guide_is_encoded_by_sampling_with_its_standard_errors(tmp_path):
    vae = VAE(model_config(data_shape=(1, 4, 4), hidden=(8,), latent_dim=3, guide="iaf", flows=1))
    x = torch.rand(5, 1, 4, 4)
    encoding = encode_points(vae, x, draws=50)
    assert encoding.draws == 50 and "50 draws" in encoding.method
    assert encoding.mean_se.shape == encoding.mean.shape == (5, 3)
    assert bool((encoding.mean_se > 0).all()) and bool((encoding.std_se > 0).all())
    path = encoding.save(tmp_path / "z.npz")
    with np.load(path) as saved:
        assert set(saved.files) == {"mean", "std", "mean_se", "std_se", "draws", "method"}
        assert int(saved["draws"]) == 50 and "Monte Carlo" in str(saved["method"])
        np.testing.assert_array_equal(saved["mean"], encoding.mean.numpy())


@pytest.mark.parametrize("guide", GUIDES.names())
def test_every_guide_is_encoded(make_vae, guide):
    vae = make_vae(guide=guide, latent_dim=2, hidden=8)
    encoding = encode_points(vae, torch.rand(4, 1, 4, 4), draws=20)
    assert encoding.mean.shape == encoding.std.shape == (4, 2)
    assert bool(torch.isfinite(encoding.mean).all()) and bool((encoding.std > 0).all())
    closed = vae.amortized_guide.head_class.has_closed_form_mean
    assert (encoding.draws is None) == closed and (encoding.mean_se is None) == closed


def _bernoulli_vae() -> VAE:
    return VAE(model_config(data_shape=(1, 4, 4), hidden=(8,), latent_dim=2))


@pytest.mark.parametrize(
    "x, message",
    [
        (torch.rand(3, 1, 5, 5), r"shape \(1, 5, 5\).*\(1, 4, 4\)"),
        (torch.full((3, 1, 4, 4), float("nan")), "NaN"),
        (torch.full((3, 1, 4, 4), 2.0), r"outside \[0, 1\]"),
        (torch.rand(0, 1, 4, 4), "no points"),
    ],
    ids=["shape", "nan", "support", "empty"],
)
def test_bad_points_are_one_line_errors(x, message):
    with pytest.raises(DataError, match=message) as info:
        check_points(x, _bernoulli_vae(), "x.npy")
    assert "\n" not in str(info.value)


def test_flat_rows_are_reshaped_and_a_gaussian_takes_any_finite_value():
    vae = VAE(model_config(data_shape=(1, 4, 4), hidden=(8,), latent_dim=2, likelihood="gaussian"))
    points = check_points(torch.full((3, 16), 5.0), vae, "x")
    assert points.shape == (3, 1, 4, 4)


def test_the_api_encodes_a_file_and_the_runs_data(tiny_digits_run, tmp_path):
    run = pyrovae.load_run(tiny_digits_run, device="cpu")
    test = pyrovae.encode(run, split="test", out=tmp_path / "test.npz")
    assert isinstance(test, Encoding) and test.mean.shape == (360, 2)
    assert test.labels is not None and test.labels.shape == (360,)
    images = run.split("test")[0][:7].cpu().numpy()
    np.savez(tmp_path / "x.npz", x=images.reshape(7, 64), y=np.arange(7))
    again = pyrovae.encode(run, tmp_path / "x.npz")
    torch.testing.assert_close(again.mean, test.mean[:7])
    assert again.labels.tolist() == list(range(7))
    with np.load(tmp_path / "test.npz") as saved:
        assert set(saved.files) == {"mean", "std", "labels", "method"}


def test_the_api_refuses_mixed_sources_and_a_path_for_a_run(tiny_digits_run):
    with pytest.raises(ConfigError, match="pyrovae.load_run"):
        pyrovae.encode(str(tiny_digits_run))
    run = pyrovae.load_run(tiny_digits_run, device="cpu")
    with pytest.raises(ConfigError, match="not both"):
        pyrovae.encode(run, np.zeros((2, 64), np.float32), dataset="digits")
    with pytest.raises(DataError, match=r"labels of x must be 2 whole numbers"):
        pyrovae.encode(run, np.zeros((2, 64), np.float32), labels=[0.5, 1.5])


def test_odd_points_and_labels_from_a_file_are_one_line_or_read(tmp_path):
    from pyrovae.api.latent import read_points

    np.save(tmp_path / "scalar.npy", np.array(np.nan))
    with pytest.raises(DataError, match="is a single number; expected points"):
        read_points(tmp_path / "scalar.npy")
    x = np.random.default_rng(0).random((5, 1, 4, 4)).astype(np.float32)
    for bad in (np.array(list("abcde")), np.arange(5) + 0j, np.ones(5, dtype=bool)):
        np.savez(tmp_path / "bad.npz", x=x, y=bad)
        with pytest.raises(DataError, match="must be 5 whole numbers"):
            read_points(tmp_path / "bad.npz")
    np.savez(tmp_path / "big_endian.npz", x=x, y=np.arange(5, dtype=">i4"))
    _, labels, _ = read_points(tmp_path / "big_endian.npz")
    assert labels is not None and labels.tolist() == [0, 1, 2, 3, 4]


def test_a_run_trained_on_incomplete_data_encodes_points_with_missing_values():
    from pyrovae.api.latent import read_points

    vae = VAE(model_config(data_shape=(1, 4, 4), hidden=(8,), latent_dim=2, missing=True))
    x = torch.bernoulli(torch.full((3, 1, 4, 4), 0.5))
    holed = x.clone()
    holed[0, 0, :2] = float("nan")  # the top half of the first point is missing
    points = check_points(holed, vae, "x.npy")
    assert torch.isnan(points[0, 0, :2]).all()  # kept: the encoder reads the mask
    encoding = encode_points(vae, points, draws=10)
    assert bool(torch.isfinite(encoding.mean).all())
    torch.testing.assert_close(encoding.mean[1:], encode_points(vae, x, draws=10).mean[1:])
    assert not torch.allclose(encoding.mean[0], encode_points(vae, x[:1], draws=10).mean[0])
    read, _, _ = read_points(holed.numpy(), missing=True)
    assert torch.isnan(read).sum() == 8
    # Infinity is no missing value; NaN is one only for such a run.
    holed[1, 0, 0, 0] = float("inf")
    with pytest.raises(DataError, match=r"infinite values \(NaN marks a missing value"):
        check_points(holed, vae, "x.npy")
    with pytest.raises(DataError, match=r"infinite values \(NaN marks a missing value"):
        read_points(holed.numpy(), missing=True)
    with pytest.raises(DataError, match="NaN is a missing value only for a run trained"):
        check_points(x.masked_fill(x > 0, float("nan")), _bernoulli_vae(), "x.npy")
    # The observed values are still checked against the likelihood's support.
    with pytest.raises(DataError, match=r"outside \[0, 1\]"):
        check_points(torch.full((1, 1, 4, 4), 2.0), vae, "x.npy")


def test_the_api_and_the_command_encode_missing_values_of_a_run_trained_with_them(tmp_path):
    from click.testing import CliRunner

    from pyrovae.cli import main

    x = torch.bernoulli(torch.full((64, 1, 4, 4), 0.5))
    train = x.clone()
    train[torch.rand(train.shape) < 0.3] = torch.nan
    pyrovae.train(data=train, out=tmp_path / "run", epochs=1, hidden=(8,), latent_dim=2,
                  likelihood="bernoulli", progress=False, log=lambda _: None)  # fmt: skip
    run = pyrovae.load_run(tmp_path / "run", device="cpu")
    holed = x[:5].clone()
    holed[0, 0, :2] = torch.nan
    encoding = pyrovae.encode(run, holed)
    assert bool(torch.isfinite(encoding.mean).all())
    torch.testing.assert_close(encoding.mean[1:], pyrovae.encode(run, x[1:5]).mean)
    np.save(tmp_path / "holed.npy", holed.numpy())
    result = CliRunner().invoke(main, ["encode", "--run", str(tmp_path / "run"), "--input",
                                       str(tmp_path / "holed.npy"), "--out",
                                       str(tmp_path / "z.npz")])  # fmt: skip
    assert result.exit_code == 0, result.output
    with np.load(tmp_path / "z.npz") as saved:
        np.testing.assert_allclose(saved["mean"], encoding.mean.numpy(), rtol=1e-5)
