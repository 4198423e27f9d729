"""benchmarks/quality.py's one evaluator and its scorers: importance sampling that is exact
where the proposal is the posterior and converges where it is not, log-weights that are
the models' own (the plain VAE's against torch.distributions, pythae's against pythae's
own loss), and ``--score`` from the command line to its table."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.distributions import Bernoulli, Normal

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import quality  # noqa: E402


def _gaussian_scorer(proposal: str):
    """Log-weights of z ~ N(0, 1), x | z ~ N(z, 1) (so p(x) = N(0, 2), p(z|x) =
    N(x/2, 1/2)) with the posterior or the prior as proposal."""

    def log_weights(x: torch.Tensor, k: int) -> torch.Tensor:
        x = x[:, 0]
        q = Normal(x / 2, math.sqrt(0.5)) if proposal == "posterior" else Normal(0.0, 1.0)
        z = q.sample((k, x.shape[0]) if proposal == "prior" else (k,))  # (k, batch)
        return Normal(z, 1.0).log_prob(x) + Normal(0.0, 1.0).log_prob(z) - q.log_prob(z)

    return log_weights


def test_importance_sampling_is_exact_with_the_posterior_as_proposal():
    x = torch.linspace(-3, 3, 7, dtype=torch.float64)[:, None]
    log_px, elbo = quality.importance_log_px(_gaussian_scorer("posterior"), x, k=50, seed=0)
    exact = Normal(0.0, math.sqrt(2.0)).log_prob(x[:, 0])
    torch.testing.assert_close(log_px, exact)
    torch.testing.assert_close(elbo, exact)  # every weight is p(x): no gap


def test_importance_sampling_converges_with_the_prior_as_proposal():
    x = torch.tensor([[-2.0], [0.0], [1.5]], dtype=torch.float64)
    k = 200_000
    log_px, elbo = quality.importance_log_px(
        _gaussian_scorer("prior"), x, k=k, seed=0, draws_per_call=60_000
    )
    exact = Normal(0.0, math.sqrt(2.0)).log_prob(x[:, 0])
    # Weights p(x|z) with z ~ N(0, 1): relative s.e. of their mean is sqrt(var/k)/p(x).
    weight_var = torch.exp(-(x[:, 0] ** 2) / 3) / (2 * math.pi * math.sqrt(3)) - exact.exp() ** 2
    relative_se = weight_var.sqrt() / exact.exp() / math.sqrt(k)
    assert ((log_px - exact).abs() < 5 * relative_se).all(), (log_px, exact)
    # The ELBO with the prior as proposal: E_z[log N(x; z, 1)] = -log(2 pi)/2 - (x^2 + 1)/2.
    exact_elbo = -0.5 * math.log(2 * math.pi) - (x[:, 0] ** 2 + 1) / 2
    assert ((elbo - exact_elbo).abs() < 0.02).all(), (elbo, exact_elbo)
    assert (log_px > elbo).all()


def test_the_plain_vaes_log_weights_are_its_densities():
    torch.manual_seed(0)
    plain = quality.PlainVAE()
    x = torch.bernoulli(torch.full((5, 1, 28, 28), 0.3))
    torch.manual_seed(1)
    log_w = plain.log_weights(x, 3)
    with torch.no_grad():
        loc, log_scale = plain.q(x)
        torch.manual_seed(1)
        z = loc + log_scale.exp() * torch.randn(3, *loc.shape)
        log_px_z = Bernoulli(logits=plain.decoder(z)).log_prob(x.flatten(1)).sum(-1)
        log_pz = Normal(0.0, 1.0).log_prob(z).sum(-1)
        log_qz = Normal(loc, log_scale.exp()).log_prob(z).sum(-1)
    torch.testing.assert_close(log_w, log_px_z + log_pz - log_qz, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("name", ["pythae-vae", "pythae-vamp"])
def test_pythaes_scorer_has_pythaes_own_elbo(name):
    """The mean log-weight is minus pythae's training loss (a one-draw estimate of minus
    the ELBO it optimizes), so the scorer scores the model pythae trained."""
    pytest.importorskip("pythae", reason="pythae is a benchmark peer, not a test dependency")
    torch.manual_seed(0)
    model = quality.pythae_models()[name]
    # Log-variances of a trained encoder (about -4), not the untrained ones near 0, where
    # tanh(v) is v and a scorer that bounded them would pass unnoticed.
    torch.nn.init.constant_(model.encoder.log_var.bias, -4.0)
    x = torch.bernoulli(torch.full((8, 1, 28, 28), 0.3))
    scorer = quality.pythae_scorer(model, vamp=name.endswith("vamp"))
    log_w = scorer(x, 500)  # (k, batch)
    with torch.no_grad():
        losses = torch.stack([model({"data": x}).loss for _ in range(200)])
    # The same images on both sides: only the draws' spread is Monte Carlo error.
    se = math.hypot(log_w.std(0).mean().item() / math.sqrt(500 * 8),
                    losses.std().item() / math.sqrt(200))  # fmt: skip
    assert abs(log_w.mean().item() + losses.mean().item()) < 5 * se + 0.05


def test_the_real_vamp_trains_without_tanh_and_its_prior_is_the_mixture():
    """pythae 0.1.2's VAMP, not a stand-in: no tanh in its forward, and its own prior is
    the normalized mixture the scorer needs (checked against torch.distributions)."""
    pytest.importorskip("pythae", reason="pythae is a benchmark peer, not a test dependency")
    torch.manual_seed(0)
    model = quality.pythae_models()["pythae-vamp"]
    torch.nn.init.constant_(model.encoder.log_var.bias, -4.0)
    assert quality.trains_with_tanh(model) is False
    quality.check_vamp_prior(model, squash=False)


def test_a_vamp_prior_that_is_no_density_is_refused(monkeypatch):
    """A pythae whose ``_log_p_z`` misplaces its brackets (the variance divides the
    log-variance too) trains on no density: the scorer stops with one line."""
    pytest.importorskip("pythae", reason="pythae is a benchmark peer, not a test dependency")
    torch.manual_seed(0)
    model = quality.pythae_models()["pythae-vamp"]
    torch.nn.init.constant_(model.encoder.log_var.bias, -4.0)

    def misbracketed(z: torch.Tensor) -> torch.Tensor:
        pseudo = model.pseudo_inputs(model.idle_input).reshape(-1, 1, 28, 28)
        out = model.encoder(pseudo)
        mu, log_var = out.embedding[None], out.log_covariance[None]
        terms = (-0.5 * (log_var + (z[:, None] - mu) ** 2) / log_var.exp()).sum(-1)
        return torch.logsumexp(terms - math.log(mu.shape[1]), dim=1)

    monkeypatch.setattr(model, "_log_p_z", misbracketed)
    with pytest.raises(SystemExit, match="not the normalized mixture"):
        quality.pythae_scorer(model, vamp=True)


class _Encoded:
    def __init__(self, embedding: torch.Tensor, log_covariance: torch.Tensor) -> None:
        self.embedding, self.log_covariance = embedding, log_covariance


class _VampStandIn:
    """An encoder and a ``forward`` drawing z as pythae's VAMP does, with or without tanh."""

    def __init__(self, squash: bool) -> None:
        self.squash = squash
        self.linear = torch.nn.Linear(784, 4)

    def encoder(self, x: torch.Tensor) -> _Encoded:
        h = self.linear(x.flatten(1))
        return _Encoded(h[:, :2], h[:, 2:] - 1.5)

    def __call__(self, inputs: dict[str, torch.Tensor]) -> _Encoded:
        out = self.encoder(inputs["data"])
        log_var = torch.tanh(out.log_covariance) if self.squash else out.log_covariance
        z = out.embedding + (0.5 * log_var).exp() * torch.randn_like(out.embedding)
        result = _Encoded(out.embedding, log_var)
        result.z = z  # type: ignore[attr-defined]
        return result


@pytest.mark.parametrize("squash", [True, False])
def test_the_vamps_tanh_is_read_off_its_forward(squash):
    torch.manual_seed(0)
    assert quality.trains_with_tanh(_VampStandIn(squash)) is squash


@pytest.fixture
def restore_threads():
    """quality.py's main sets one thread for the process; the tests after keep theirs."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_score_from_the_command_line_writes_the_paired_table(
    tmp_path, monkeypatch, capsys, restore_threads, write_idx_set
):
    import pyrovae

    rng = np.random.default_rng(0)
    data_dir = tmp_path / "idx"
    write_idx_set(data_dir, gz=True, n_train=40, n_test=12)
    images = (rng.random((64, 1, 28, 28)) < 0.3).astype(np.float32)
    runs = {"ema": 0.9, "plain": 0.0}
    for name, ema in runs.items():
        pyrovae.train(data=images, hidden=(8,), latent_dim=2, epochs=1, batch_size=32, ema=ema,
                      device="cpu", out=tmp_path / name, progress=False,
                      log=lambda line: None)  # fmt: skip
    out = tmp_path / "scored"
    argv = ["quality.py", "--score", str(tmp_path / "ema"), str(tmp_path / "plain"),
            "--weights", "trained,average", "--data-dir", str(data_dir), "--test-size", "10",
            "-k", "4", "--out", str(out)]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    quality.main()
    printed = capsys.readouterr().out
    assert "plain: trained without --ema, scored once" in printed
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [row["model"] for row in rows] == ["ema:trained", "ema", "plain"]
    assert rows[0]["delta"] == 0.0 and rows[0]["delta_se"] == 0.0
    for row in rows:
        assert math.isfinite(row["log_px"]) and row["log_px"] >= row["elbo"]
        assert row["epochs"] == 1
    assert "| ema |" in (out / "results.md").read_text()


@pytest.mark.parametrize("problem", ["missing", "no checkpoint"])
def test_score_of_a_folder_that_is_no_run_is_one_line(tmp_path, monkeypatch, problem):
    run = tmp_path / "run"
    if problem == "no checkpoint":
        run.mkdir()
        (run / "metrics.jsonl").write_text("")
    argv = ["quality.py", "--score", str(run), "--data-dir", str(tmp_path), "--out",
            str(tmp_path / "scored")]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as info:
        quality.main()
    message = str(info.value.code)
    assert message.startswith("--score: ") and str(run) in message and "\n" not in message
