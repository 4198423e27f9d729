"""The autoregressive Bernoulli likelihood against exact answers: its conditionals read
only the pixels before them, it sums to 1 over every image, its draws follow its
log_prob, and its mean is E[x|z] (all by enumeration of tiny images)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import pyrovae
from pyrovae.cli import main
from pyrovae.errors import ConfigError, DataError
from pyrovae.inference.impute import impute_batch
from pyrovae.model.context import ModelContext
from pyrovae.model.likelihoods.autoregressive import (
    MAX_MEAN_DRAWS,
    AutoregressiveBernoulliLikelihood,
    odd_kernel,
)
from pyrovae.model.likelihoods.bernoulli import BernoulliLikelihood
from pyrovae.model.spec import model_config
from pyrovae.model.vae import VAE

NAME = AutoregressiveBernoulliLikelihood.name


def _likelihood(shape, **options) -> AutoregressiveBernoulliLikelihood:
    """The likelihood with every weight drawn at random (trained-looking, not zero)."""
    likelihood = AutoregressiveBernoulliLikelihood(
        ModelContext(data_shape=shape, n_latent=2),
        **AutoregressiveBernoulliLikelihood.resolve_options(options),
    )
    with torch.no_grad():
        for parameter in likelihood.parameters():
            parameter.normal_()
    return likelihood


def _all_images(shape) -> torch.Tensor:
    """Every binary image of ``shape``, ``(2**size, 1, *shape)``, in raster order of bits."""
    size = int(np.prod(shape))
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=size))).view(-1, 1, *shape)


@pytest.mark.parametrize("shape, kernel", [((1, 5, 6), 3), ((2, 4, 4), 5), ((3, 3, 5), 3)])
def test_each_logit_reads_only_the_pixels_before_it(shape, kernel):
    likelihood = _likelihood(shape, ar_kernel=kernel)
    x = torch.bernoulli(torch.full((1, *shape), 0.5)).requires_grad_()
    decoded = torch.randn(1, *shape)
    logits = likelihood.logits(decoded, likelihood.context(x))
    height, width = shape[1:]
    for channel, row, col in itertools.product(*map(range, shape)):
        (grad,) = torch.autograd.grad(logits[0, channel, row, col], x, retain_graph=True)
        reads = grad[0].abs().sum(0) > 0  # (H, W): the pixels this logit depends on
        position = torch.arange(height * width).view(height, width)
        assert not reads[position >= row * width + col].any()
    # ... and it does read some of them: the term is not zero.
    (grad,) = torch.autograd.grad(logits[0, :, -1, -1].sum(), x)
    assert grad.abs().sum() > 0


@pytest.mark.parametrize("shape", [(1, 3, 4), (2, 2, 3)])
def test_probabilities_of_all_images_sum_to_one(shape):
    likelihood = _likelihood(shape, ar_channels=3, ar_kernel=3)
    decoded = torch.randn(2, *shape)
    log_p = likelihood(decoded).log_prob(_all_images(shape))  # (2**size, 2)
    torch.testing.assert_close(log_p.exp().sum(0), torch.ones(2, dtype=log_p.dtype))


def test_draws_follow_log_prob():
    shape, n = (2, 1, 2), 40_000
    likelihood = _likelihood(shape, ar_channels=4, ar_kernel=3)
    px = likelihood(torch.randn(*shape))
    p = px.log_prob(_all_images(shape).squeeze(1)).exp().detach()  # (16,)
    draws = px.sample((n,))  # (n, *shape)
    assert draws.shape == (n, *shape) and set(draws.unique().tolist()) <= {0.0, 1.0}
    bits = 2 ** torch.arange(3, -1, -1, dtype=torch.float32)
    counts = torch.bincount((draws.reshape(n, 4) @ bits).long(), minlength=16).float()
    # Each frequency within 4.5 binomial standard errors (fixed seed: not flaky).
    stderr = (p * (1 - p) / n).sqrt()
    assert ((counts / n - p).abs() <= 4.5 * stderr + 1e-4).all()


def test_mean_and_variance_estimate_the_exact_moments():
    shape = (1, 2, 3)
    likelihood = _likelihood(shape, ar_kernel=3, ar_mean_draws=4000)
    # Two images far apart, so that a mean paired with the wrong image fails.
    decoded = torch.randn(2, *shape) + torch.tensor([-3.0, 3.0]).view(2, 1, 1, 1)
    px = likelihood(decoded)
    images = _all_images(shape)  # (64, 1, *shape)
    p = px.log_prob(images).exp().detach()  # (64, 2)
    exact = (p[..., None, None, None] * images).sum(0)  # (2, *shape)
    assert (exact[1] - exact[0]).abs().max() > 0.3
    mean = px.mean
    assert mean.shape == (2, *shape)
    # 4000 draws: a standard error of at most 0.5 / sqrt(4000) = 0.008 per pixel.
    torch.testing.assert_close(mean, exact, atol=0.035, rtol=0)
    torch.testing.assert_close(px.variance, exact * (1 - exact), atol=0.035, rtol=0)


def test_the_variance_is_unbiased_from_two_draws():
    # Over many estimates for one image, the two-draw estimate averages to the exact
    # variance; m(1 - m) of the two-draw mean would be low by that mean's variance.
    # The estimates come from separate calls: the images of one call share their
    # random numbers (common random numbers), so copies in a batch are one estimate.
    shape, n = (1, 2, 2), 4000
    likelihood = _likelihood(shape, ar_kernel=3, ar_mean_draws=2)
    decoded = torch.randn(*shape)
    images = _all_images(shape).squeeze(1)
    p = likelihood(decoded).log_prob(images).exp().detach()
    exact = (p[:, None, None, None] * images).sum(0)
    px = likelihood(decoded[None])
    copies = likelihood(decoded.expand(3, *shape)).variance
    assert (copies == copies[0]).all()  # one call: the same random numbers for each copy
    estimates = torch.cat([px.variance for _ in range(n)])  # (n, *shape)
    stderr = estimates.std(0) / n**0.5
    assert ((estimates.mean(0) - exact * (1 - exact)).abs() <= 4.5 * stderr + 1e-4).all()


def test_the_mean_averages_probabilities_not_drawn_pixels():
    # Rao-Blackwellized: one draw's mean is its conditional probabilities, not 0s and 1s.
    likelihood = _likelihood((1, 3, 3), ar_kernel=3, ar_mean_draws=1)
    px = likelihood(torch.randn(4, 1, 3, 3))
    mean = px.mean
    assert ((mean > 0.01) & (mean < 0.99)).float().mean() > 0.5
    torch.testing.assert_close(px.variance.shape, mean.shape)


def test_each_element_of_a_batch_is_drawn_from_its_own_decoder_output():
    shape = (2, 3, 3)
    likelihood = AutoregressiveBernoulliLikelihood(ModelContext(data_shape=shape, n_latent=2))
    # Untrained (u = w = 0): pixels are Bernoulli(sigmoid(decoded)); at +-30, certain.
    sign = torch.randint(0, 2, (4, 5, *shape)).float() * 2 - 1
    px = likelihood(30 * sign)
    draws = px.sample((3,))
    assert draws.shape == (3, 4, 5, *shape)
    torch.testing.assert_close(draws, (sign > 0).float().expand_as(draws))
    expanded = px.expand((2, 4, 5)).sample()
    torch.testing.assert_close(expanded, (sign > 0).float().expand_as(expanded))
    torch.testing.assert_close(px.mean, (sign > 0).float(), atol=1e-6, rtol=0)


def test_untrained_is_the_plain_bernoulli_decoder():
    context = ModelContext(data_shape=(1, 4, 4), n_latent=2)
    autoregressive = AutoregressiveBernoulliLikelihood(context)
    decoded, x = torch.randn(3, 1, 4, 4), torch.bernoulli(torch.full((3, 1, 4, 4), 0.5))
    expected = BernoulliLikelihood(context)(decoded).log_prob(x)
    torch.testing.assert_close(autoregressive(decoded).log_prob(x), expected)


def test_log_prob_broadcasts_draws_of_z_against_the_images():
    shape = (1, 4, 4)
    likelihood = _likelihood(shape)
    decoded = torch.randn(5, 3, *shape)  # (K draws, batch, ...)
    x = torch.bernoulli(torch.full((3, *shape), 0.5))
    px = likelihood(decoded)
    assert px.batch_shape == (5, 3) and px.event_shape == shape
    one_by_one = torch.stack([likelihood(d).log_prob(x) for d in decoded])
    torch.testing.assert_close(px.log_prob(x), one_by_one)
    assert px.expand((2, 5, 3)).log_prob(x).shape == (2, 5, 3)


def test_option_and_shape_errors():
    assert odd_kernel("5") == 5
    for bad in ("4", 1, "x"):
        with pytest.raises(ValueError, match="odd whole number|whole number"):
            odd_kernel(bad)
    with pytest.raises(ConfigError, match=r"needs images .* shape \(12,\)"):
        AutoregressiveBernoulliLikelihood(ModelContext(data_shape=(12,), n_latent=2))
    # On 8 x 8 images a window of more than 15 pixels reads only zero padding beyond.
    wide = ModelContext(data_shape=(1, 8, 6), n_latent=2)
    assert AutoregressiveBernoulliLikelihood(wide, ar_kernel=15).kernel == 15
    with pytest.raises(ConfigError, match=r"--ar-kernel 17 is wider than 8x6 images .* at most 15"):
        AutoregressiveBernoulliLikelihood(wide, ar_kernel=17)
    # More draws than MAX_MEAN_DRAWS draw that many, with a warning (a run saved with
    # more still loads).
    options = AutoregressiveBernoulliLikelihood.resolve_options({"ar_mean_draws": 100_000})
    with pytest.warns(UserWarning, match=f"100000 is more than {MAX_MEAN_DRAWS}: E.x.z. is"):
        likelihood = AutoregressiveBernoulliLikelihood(wide, **options)
    assert likelihood.mean_draws == MAX_MEAN_DRAWS


def test_mean_draws_come_in_chunks_of_bounded_memory(monkeypatch):
    from pyrovae.model.likelihoods import autoregressive

    shape = (1, 2, 3)
    likelihood = _likelihood(shape, ar_kernel=3, ar_mean_draws=3001)
    decoded = torch.randn(2, *shape) + torch.tensor([-3.0, 3.0]).view(2, 1, 1, 1)
    px = likelihood(decoded)
    p = px.log_prob(_all_images(shape)).exp().detach()
    exact = (p[..., None, None, None] * _all_images(shape)).sum(0)
    # An image of a draw holds 41 values (6 probabilities, 6 logits, 4 x 5 padded, a 3 x 3
    # window): 820 a chunk are 10 draws of the 2 images at a time.
    monkeypatch.setattr(autoregressive, "MEAN_CHUNK_VALUES", 820)
    sizes, draw = [], likelihood.draw

    def counted(decoded, groups=None):
        sizes.append(decoded.shape[0])
        return draw(decoded, groups)

    monkeypatch.setattr(likelihood, "draw", counted)
    torch.testing.assert_close(px.mean, exact, atol=0.035, rtol=0)
    assert max(sizes) == 20 and sum(sizes) == 2 * 3001
    torch.testing.assert_close(px.variance, exact * (1 - exact), atol=0.035, rtol=0)


@pytest.mark.parametrize("draws", [1, 2, 3, 7, 10, 33])
@pytest.mark.parametrize("per_chunk", [1, 2, 3, 5, 100])
def test_each_draw_is_summed_into_its_half(monkeypatch, draws, per_chunk):
    # Draw k's "probabilities" are k itself: the sums say which draws went where.
    from pyrovae.model.likelihoods import autoregressive

    likelihood = _likelihood((1, 2, 2), ar_kernel=3, ar_mean_draws=draws)
    monkeypatch.setattr(autoregressive, "MEAN_CHUNK_VALUES", per_chunk * 3 * 33)
    seen = [0]

    def numbered(decoded, groups=None):
        count = decoded.shape[0] // 3
        k = torch.arange(seen[0], seen[0] + count, dtype=decoded.dtype)
        seen[0] += count
        return decoded, k.repeat_interleave(3).view(-1, 1, 1, 1).expand_as(decoded).clone()

    monkeypatch.setattr(likelihood, "draw", numbered)
    first, second, odd = likelihood(torch.zeros(3, 1, 2, 2))._probability_sums()
    half = draws // 2
    assert float(first[0, 0, 0, 0]) == sum(range(half))
    assert float(second[0, 0, 0, 0]) == sum(range(half, 2 * half))
    assert float(odd[0, 0, 0, 0]) == (draws - 1 if draws % 2 else 0)
    assert seen[0] == draws


def test_nearby_codes_get_nearby_means():
    # The images of one call share their random numbers: E[x|z] at two close codes
    # differs by what the codes change, far less than two calls at one code differ.
    # (A pixel whose probability moves past its uniform number still flips, and the
    # pixels after it with it, so this holds on average over pixels and calls.)
    likelihood = _likelihood((1, 4, 4), ar_kernel=3, ar_mean_draws=16)
    decoded = torch.randn(1, 1, 4, 4)
    near, apart = [], []
    for _ in range(20):
        both = likelihood(torch.cat([decoded, decoded + 0.01])).mean
        again = likelihood(decoded).mean
        near.append((both[1] - both[0]).abs().mean())
        apart.append((again[0] - both[0]).abs().mean())
    assert torch.stack(near).mean() < 0.2 * torch.stack(apart).mean()


def test_missing_values_are_refused_with_a_reason():
    vae = VAE(model_config(data_shape=(1, 4, 4), hidden=(8,), latent_dim=2, likelihood=NAME))
    x = torch.bernoulli(torch.full((2, 1, 4, 4), 0.5))
    mask = torch.ones_like(x, dtype=torch.bool)
    with pytest.raises(ConfigError, match="cannot leave missing values out"):
        vae.log_px(x, torch.zeros(2, 2), mask)
    x[0, 0, 0, 0] = torch.nan
    with pytest.raises(ConfigError, match="cannot impute with this run: .*--likelihood bernoulli"):
        impute_batch(vae, x)


def test_scoring_data_with_nan_names_the_likelihood_not_impute(tmp_path):
    run = tmp_path / "run"
    args = ["--ar-channels", "2", "--epochs", "1", "--no-progress", "--out", str(run)]
    result = CliRunner().invoke(main, ["train", "--likelihood", NAME, *args])
    assert result.exit_code == 0, result.output
    x = np.random.default_rng(0).random((3, 1, 8, 8))
    x[0, 0, 0, 0] = np.nan
    with pytest.raises(DataError, match="cannot leave missing values out") as error:
        pyrovae.evaluate_run(run, data=x, k=2, metrics="logpx")
    assert "impute" not in str(error.value)


def test_training_on_data_with_nan_fails_before_the_run_exists(tmp_path):
    x = np.random.default_rng(0).random((40, 1, 4, 4)).astype(np.float32)
    x[0, 0, 0, 0] = np.nan
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "run"
    args = ["train", "--likelihood", NAME, "--dataset", str(tmp_path / "x.npy"), "--epochs", "1"]
    result = CliRunner().invoke(main, [*args, "--out", str(out)])
    assert result.exit_code != 0
    assert "has missing values (NaN), but likelihood 'autoregressive-bernoulli'" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert not out.exists()


def test_train_sample_and_evaluate_from_the_command_line(tmp_path):
    runner, run = CliRunner(), str(tmp_path / "run")
    result = runner.invoke(main, ["train", "--likelihood", NAME, "--ar-channels", "4",
                                  "--epochs", "1", "--no-progress", "--out", run])  # fmt: skip
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["sample", "--run", run, "-n", "4", "--out",
                                  str(tmp_path / "s.png")])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (tmp_path / "s.png").stat().st_size > 0
    result = runner.invoke(main, ["evaluate", "--run", run, "-k", "20", "--metrics", "logpx,elbo"])
    assert result.exit_code == 0, result.output
    assert "log p(x) (IS, K=20)" in result.output
