"""Tests of pyrovae/reports/diagnose.py and ``pyrovae diagnose``: PSIS k̂ and NUTS against the
exact posterior of probabilistic PCA, and the report's files for every guide and prior."""

from __future__ import annotations

import json
import math
import warnings
from html import escape

import arviz as az
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from pyro.distributions import MultivariateNormal

from pyrovae.inference.importance import log_importance_weights
from pyrovae.inference.nuts import gaussian_w2, nuts_reference
from pyrovae.inference.psis import khat_shares, psis_khat
from pyrovae.model.guides.base import GUIDES
from pyrovae.model.ppca import PPCA, linear_gaussian_vae
from pyrovae.model.priors.base import PRIORS
from pyrovae.reports.diagnose import REPORT_HTML, REPORT_JSON, REPORT_NETCDF, diagnose


def _ppca(n: int, n_latent: int = 2):
    ppca = PPCA.random(12, n_latent, sigma=0.5, seed=0)
    vae = linear_gaussian_vae(ppca)
    x = ppca.sample(n, torch.Generator().manual_seed(1))  # (n, 12)
    return ppca, vae, x.reshape(n, 1, 1, 12), ppca.posterior(x)


def test_posterior_predictive_summary_standard_errors():
    from pyrovae.reports.diagnose import posterior_predictive_summary

    rng = np.random.default_rng(0)
    replicated = rng.normal(size=(400, 50))
    observed = np.concatenate([np.zeros(45), np.full(5, 10.0)])  # 5 of 50 far outside
    ppc = posterior_predictive_summary(observed, replicated)
    assert ppc["outside_95"] == pytest.approx(0.1)
    assert ppc["outside_95_stderr"] == pytest.approx(math.sqrt(0.1 * 0.9 / 50))
    # Mean of 400 x 50 standard normals: its sd over replications is 1 / sqrt(50 * 400).
    assert ppc["replicated_mean_mc_stderr"] == pytest.approx(1 / math.sqrt(20000), rel=0.2)
    assert abs(ppc["replicated_mean"]) < 4 * ppc["replicated_mean_mc_stderr"]
    # One image's share, or a share of 0 or 1, has no standard error (it was 0: "100% ±
    # 0%"), and none is shown.
    one = posterior_predictive_summary(observed[-1:], replicated[:, -1:])
    assert one["outside_95"] == 1.0 and math.isnan(one["outside_95_stderr"])
    none = posterior_predictive_summary(observed[:45], replicated[:, :45])
    assert none["outside_95"] == 0.0 and math.isnan(none["outside_95_stderr"])
    from pyrovae.reports.diagnose_page import plus_minus_share

    assert plus_minus_share(one["outside_95_stderr"]) == "" and plus_minus_share(0.03) == " ± 3%"


@pytest.mark.parametrize("draws", [25, 100])
@pytest.mark.parametrize("discrete", [False, True])
def test_a_model_that_fits_leaves_five_percent_outside_the_95_percent_interval(draws, discrete):
    # Observed and replicated statistics from one distribution: 5% outside, whatever the
    # number of replications or ties (the empirical percentiles of 100 draws left out
    # 6.8%, of 25 draws 11%). 8000 images: a binomial standard error of 0.0024.
    from pyrovae.reports.diagnose import posterior_predictive_summary

    rng = np.random.default_rng(1)
    values = (
        rng.binomial(20, 0.3, (draws + 1, 8000)) if discrete else rng.normal(size=(draws + 1, 8000))
    )
    ppc = posterior_predictive_summary(values[0].astype(float), values[1:].astype(float))
    assert abs(ppc["outside_95"] - 0.05) < 4 * math.sqrt(0.05 * 0.95 / 8000)


def test_khat_of_the_exact_posterior_is_reported_exact():
    # With the exact posterior as proposal every ratio is p(x): the float32 log-weights
    # differ only by round-off (about 1e-5 nats here), whose k̂ is noise; such points are
    # exact (NaN k̂), in float32 and in float64 alike.
    _, vae, x, posterior = _ppca(8)
    with torch.no_grad():
        log_w = log_importance_weights(vae, x, 2000, proposal=posterior)
    assert float((log_w.max(0).values - log_w.min(0).values).max()) > 0  # round-off is there
    khat = psis_khat(log_w)
    assert khat.shape == (8,) and np.isnan(khat).all()
    assert khat_shares(khat)["exact"] == 1.0
    ppca64 = PPCA(_ppca(1)[0].weight.double(), _ppca(1)[0].bias.double(), 0.5)
    vae64 = linear_gaussian_vae(ppca64).double()
    x64 = x.double()
    with torch.no_grad():
        log_w64 = log_importance_weights(vae64, x64, 2000, ppca64.posterior(x64.flatten(1)))
    assert log_w64.dtype == torch.float64 and np.isnan(psis_khat(log_w64)).all()


def test_khat_takes_weights_that_carry_gradients():
    # As a user computes them, outside torch.no_grad(): the weights carry the VAE's graph.
    _, vae, x, _ = _ppca(4)
    log_w = log_importance_weights(vae, x, 100)
    assert log_w.requires_grad
    assert psis_khat(log_w).shape == (4,)


def test_khat_of_a_slightly_wider_proposal_is_a_real_k_hat():
    # 2% wider than the posterior: a real (light) tail, well above round-off.
    _, vae, x, posterior = _ppca(8)
    wide = MultivariateNormal(posterior.loc, 1.02 * posterior.covariance_matrix)
    with torch.no_grad():
        log_w = log_importance_weights(vae, x, 2000, proposal=wide)
    khat = psis_khat(log_w)
    assert not np.isnan(khat).any() and (khat < 0.5).all()


def test_diagnose_reports_exact_points_of_an_exact_guide(tmp_path):
    # A PPCA whose amortized guide is its exact posterior (one latent unit: a diagonal
    # guide holds it) gets every point reported exact, in the summary and the JSON.
    # (One unit also draws the latent-space plot on one axis.)
    from pyrovae.reports.diagnose import diagnose

    ppca = PPCA(torch.tensor([[1.0], [0.5], [-0.3]]), torch.zeros(3), 0.5)
    vae = linear_gaussian_vae(ppca)
    m = ppca.weight.T @ ppca.weight + ppca.sigma**2 * torch.eye(1)
    a = torch.linalg.solve(m, ppca.weight.T)  # (1, 3)
    sd = (ppca.sigma**2 / m).sqrt().squeeze()
    head = vae.guide_net
    with torch.no_grad():
        vae.encoder.net.weight.zero_()
        vae.encoder.net.bias.zero_()
        vae.encoder.net.weight[:1] = a
        head.loc.weight.zero_()
        head.loc.bias.zero_()
        head.loc.weight[0, 0] = 1.0
        head.raw_scale.weight.zero_()
        head.raw_scale.bias.fill_(float(torch.log(torch.expm1(sd - head.min_scale))))
    images = ppca.sample(6, torch.Generator().manual_seed(2)).reshape(6, 1, 1, 3)
    result = diagnose(vae, images, tmp_path, n=6, draws=200, nuts=0, ppc_draws=10)
    assert result.khat_shares["exact"] == 1.0 and result.khat == [None] * 6
    assert "exact 100%" in result.format_summary()
    summary = json.loads((tmp_path / REPORT_JSON).read_text())
    assert summary["khat"] == [None] * 6


def test_khat_of_a_too_narrow_proposal_is_bad():
    # A tenth of the posterior's standard deviation: the ratios' tail is very heavy.
    _, vae, x, posterior = _ppca(8)
    narrow = MultivariateNormal(posterior.loc, 0.01 * posterior.covariance_matrix)
    with torch.no_grad():
        log_w = log_importance_weights(vae, x, 2000, proposal=narrow)
    khat = psis_khat(log_w)
    assert (khat > 0.7).all()
    assert khat_shares(khat) == {"exact": 0.0, "good": 0.0, "usable": 0.0, "bad": 1.0}


def test_khat_of_constant_ratios_is_exact_and_shares_add_up():
    log_w = torch.zeros(100, 3)
    log_w[:, 2] = torch.randn(100) * 3  # a heavy tail for the third point
    khat = psis_khat(log_w)
    assert np.isnan(khat[0]) and np.isnan(khat[1]) and np.isfinite(khat[2])
    shares = khat_shares(np.array([0.1, 0.6, 0.9, 0.2, np.nan]))
    assert shares == {"exact": 0.2, "good": 0.4, "usable": 0.2, "bad": 0.2}


def test_gaussian_w2_of_shifted_gaussians_is_the_shift():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((20000, 2))
    b = rng.standard_normal((20000, 2)) + np.array([3.0, 4.0])
    assert gaussian_w2(a, b) == pytest.approx(5.0, abs=0.05)
    assert gaussian_w2(a, a) == pytest.approx(0.0, abs=1e-6)


def _check_against_exact(reference, posterior, n_points, mean_tol, cov_tol):
    draws = reference.draws  # (chain, draw, point, latent)
    for i in range(n_points):
        flat = draws[:, :, i].reshape(-1, draws.shape[-1])
        cov = posterior.covariance_matrix[i].numpy()
        sd = np.sqrt(np.diag(cov))
        assert np.abs(flat.mean(0) - posterior.loc[i].numpy()).max() / sd.min() < mean_tol
        # Covariance entries compared on the scale of the sd products.
        err = np.abs(np.cov(flat, rowvar=False) - cov) / np.outer(sd, sd)
        assert err.max() < cov_tol


def test_nuts_reference_roughly_matches_the_exact_posterior():
    # Fast tier: 2 short chains (bulk ESS about 40), so loose tolerances of about 3 Monte
    # Carlo standard errors: 0.5 sd on the mean, 0.6 on the covariance.
    _, vae, x, posterior = _ppca(1)
    reference = nuts_reference(vae, x, chains=2, draws=100, warmup=100)
    assert reference.draws.shape == (2, 100, 1, 2)
    assert {"r_hat", "ess_bulk", "ess_tail"} <= set(reference.summary[0])
    _check_against_exact(reference, posterior, 1, mean_tol=0.5, cov_tol=0.6)


@pytest.mark.slow
def test_nuts_reference_matches_the_exact_posterior():
    # Mean within 0.15 posterior sds, covariance within 0.15 of the sd products,
    # R-hat < 1.01, with 4 chains x 500 draws (ESS > 400 per coordinate).
    _, vae, x, posterior = _ppca(2)
    reference = nuts_reference(vae, x, chains=4, draws=500, warmup=500)
    assert reference.max_r_hat < 1.01
    assert reference.min_ess_bulk > 400
    _check_against_exact(reference, posterior, 2, mean_tol=0.15, cov_tol=0.15)


def _check_report(result, out, n, draws, n_latent, nuts):
    from pyrovae.reports.diagnose_data import COMPACT_Q_DRAWS, VARIATIONAL_GROUP

    for name in (REPORT_HTML, REPORT_NETCDF, REPORT_JSON):
        assert (out / name).is_file()
    idata = az.from_netcdf(out / REPORT_NETCDF)
    assert {"sample_stats", VARIATIONAL_GROUP} <= set(idata.groups())
    q_z = idata[VARIATIONAL_GROUP]["z"]
    assert q_z.dims == ("chain", "draw", "datapoint", "latent")
    assert q_z.shape == (1, min(draws, COMPACT_Q_DRAWS), n, n_latent)
    assert idata.sample_stats["log_weight"].dims == ("chain", "draw", "datapoint")
    khat = [np.nan if k is None else k for k in result.khat]
    np.testing.assert_allclose(idata.sample_stats["pareto_k"].values, khat, rtol=1e-6)
    summary = json.loads((out / REPORT_JSON).read_text())
    assert len(summary["khat"]) == n
    assert sum(summary["khat_shares"].values()) == pytest.approx(1.0)
    assert summary["verdict"] == result.verdict and summary["trust"] in ("yes", "mostly", "no")
    ppc = summary["ppc"]
    assert ppc["replicated_mean_mc_stderr"] >= 0
    if 0 < ppc["outside_95"] < 1:  # else no standard error is defined (null)
        assert 0 < ppc["outside_95_stderr"] <= 0.5
    else:
        assert ppc["outside_95_stderr"] is None
    assert ppc["p_value_mean_mc_stderr"] >= 0
    html = (out / REPORT_HTML).read_text()
    tiles = html.count('class="tile"')
    assert tiles == 2 * min(n, 10)  # the worst points, beside their reconstructions
    assert html.count("data:image/png;base64,") - tiles == (4 if nuts else 3)
    assert result.verdict.split(":")[0] in html
    summary_text = result.format_summary()
    for warning in result.warnings:  # every warning of the console is on the page
        assert f"warning: {warning}" in summary_text
        assert escape(warning, quote=False) in html
    if nuts:
        assert summary["nuts"]["points"] == nuts
        assert math.isfinite(summary["nuts"]["max_r_hat"])
        assert idata.posterior["z"].dims == ("chain", "draw", "datapoint", "latent")
        assert idata.posterior["z"].shape[2] == nuts
        assert idata.observed_data["x"].shape[0] == nuts
    else:
        assert "posterior" not in idata.groups()


@pytest.mark.parametrize("guide", GUIDES.names())
def test_diagnose_every_guide(make_vae, guide, tmp_path):
    vae = make_vae(guide=guide)
    images = torch.bernoulli(torch.full((20, 1, 4, 4), 0.3))
    labels = torch.arange(20) % 3
    result = diagnose(
        vae,
        images,
        tmp_path,
        labels=labels,
        n=5,
        draws=100,
        nuts=1,
        nuts_draws=10,
        nuts_warmup=10,
        chains=2,
        ppc_draws=10,
    )
    _check_report(result, tmp_path, 5, 100, 3, nuts=1)


@pytest.mark.parametrize("prior", PRIORS.names())
def test_diagnose_every_prior(make_vae, prior, tmp_path):
    vae = make_vae(prior=prior)
    images = torch.bernoulli(torch.full((20, 1, 4, 4), 0.3))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = diagnose(vae, images, tmp_path, n=4, draws=100, nuts=0, ppc_draws=10)
    # Without labels the latent plot has one colour and no colour map to complain about.
    assert not [w for w in caught if "colormapping" in str(w.message)]
    _check_report(result, tmp_path, 4, 100, 3, nuts=0)


def test_diagnose_cli(tmp_path, tiny_config):
    from pyrovae.api import train
    from pyrovae.cli import main

    tiny_config.train.epochs = 1
    train(tiny_config, tmp_path / "run", progress=False, log=lambda _: None)
    out = tmp_path / "report"
    args = ["diagnose", "--run", str(tmp_path / "run"), "-n", "6", "--out", str(out)]
    args += ["--draws", "100", "--nuts", "1", "--nuts-draws", "10", "--chains", "2"]
    result = CliRunner().invoke(main, [*args, "--no-progress", "--full-netcdf"])
    assert result.exit_code == 0, result.output
    assert "PSIS over 6 points" in result.output
    assert "diagnose [" not in result.output  # --no-progress: no progress lines
    summary = json.loads((out / REPORT_JSON).read_text())
    assert summary["n"] == 6 and summary["nuts"]["chains"] == 2
    idata = az.from_netcdf(out / REPORT_NETCDF)
    assert "label" in idata.constant_data  # digits have labels
    assert idata.sample_stats["log_weight"].dtype == np.float64  # --full-netcdf
    assert idata.attrs["split"] == "test" and idata.attrs["run_dir"] == str(tmp_path / "run")
    assert json.loads(idata.attrs["config"])["model"]["latent_dim"] == 4
    assert not list(out.glob(".*.tmp"))  # files written whole, temporaries gone
    bad = ["diagnose", "--run", str(tmp_path / "run"), "--out", str(out / REPORT_JSON / "x")]
    result = CliRunner().invoke(main, bad)
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert "cannot create the output folder" in result.output


def test_diagnose_runs_in_eval_mode_and_leaves_the_mode_as_it_was(make_vae, tmp_path):
    # It used to switch the caller's VAE to eval mode for good.
    vae = make_vae().train()
    modes: list[bool] = []
    vae.encoder.register_forward_pre_hook(lambda module, _: modes.append(module.training))
    images = torch.bernoulli(torch.full((6, 1, 4, 4), 0.3))
    diagnose(vae, images, tmp_path, n=3, draws=100, nuts=0, ppc_draws=5)
    assert modes and not any(modes)
    assert vae.training


def test_diagnose_rejects_more_nuts_points_than_points(make_vae, tmp_path):
    from pyrovae.cli import main
    from pyrovae.errors import ConfigError

    vae = make_vae()
    with pytest.raises(ConfigError, match="--nuts"):
        diagnose(vae, torch.zeros(4, 1, 4, 4), tmp_path, n=2, nuts=3)
    # From Python, text or fractions were TypeErrors.
    for options, message in [({"n": "5"}, "^n must be a whole number"),
                             ({"nuts": 1.5}, "^nuts must be a whole number"),
                             ({"draws": 50}, "^draws must be at least 100")]:  # fmt: skip
        with pytest.raises(ConfigError, match=message):
            diagnose(vae, torch.zeros(4, 1, 4, 4), tmp_path, **options)
    result = CliRunner().invoke(main, ["diagnose", "--run", str(tmp_path / "none")])
    assert result.exit_code == 1 and result.output.count("\n") == 1


def test_diagnose_run_leaves_the_callers_rng_alone(tmp_path, tiny_config):
    from pyrovae.api import diagnose_run, train

    tiny_config.train.epochs = 1
    train(tiny_config, tmp_path / "run", progress=False, log=lambda _: None)
    state = torch.get_rng_state()
    idata = diagnose_run(tmp_path / "run", out=tmp_path / "d", n=2, draws=100, nuts=0, seed=5)
    assert torch.equal(torch.get_rng_state(), state)
    assert isinstance(idata, az.InferenceData)  # the InferenceData it wrote, returned
    assert idata.sample_stats["pareto_k"].shape == (2,)
    written = az.from_netcdf(tmp_path / "d" / "diagnostics.nc")
    assert np.allclose(
        written.sample_stats["pareto_k"].values, idata.sample_stats["pareto_k"].values
    )


def test_summary_warns_when_nuts_chains_disagree():
    from pyrovae.reports.diagnose import DiagnosisResult

    nuts = {"points": 1, "chains": 4, "max_r_hat": 1.2, "min_ess_bulk": 14.0, "w2": [2.0]}
    ppc = {
        "observed_mean": 0.3,
        "replicated_mean": 0.3,
        "replicated_mean_mc_stderr": 0.01,
        "outside_95": 0.1,
        "outside_95_stderr": 0.3,
    }
    result = DiagnosisResult(
        n=1,
        draws=10,
        khat=[0.1],
        khat_shares={"exact": 0.0, "good": 1.0, "usable": 0.0, "bad": 0.0},
        nuts=nuts,
        ppc=ppc,
        seconds=1.0,
    )
    assert "warning: R-hat above 1.01" in result.format_summary()
    nuts["max_r_hat"] = 1.005
    assert "warning" not in result.format_summary()


def test_diagnose_shows_progress_for_psis_and_nuts(make_vae, tmp_path, monkeypatch):
    import io
    import sys

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    vae = make_vae()
    images = torch.bernoulli(torch.full((6, 1, 4, 4), 0.3))
    for progress in (True, False):
        terminal = Terminal()
        monkeypatch.setattr(sys, "stderr", terminal)
        diagnose(
            vae,
            images,
            tmp_path,
            n=3,
            draws=100,
            nuts=1,
            nuts_draws=10,
            nuts_warmup=10,
            chains=2,
            ppc_draws=5,
            progress=progress,
        )
        shown = terminal.getvalue()
        bars = ("PSIS draws", "NUTS, 2 chains", "latent codes")
        stages = ("] PSIS: 100 draws", "] NUTS reference: 1 points", "] figures", "] done in")
        for step in bars + stages:
            assert (step in shown) == progress, shown


@pytest.mark.parametrize(
    ("bad", "relative", "trust"),
    [
        (0.0, [0.1], "yes"),
        (0.05, [0.1], "mostly"),
        (0.3, [0.1], "no"),
        (0.0, [0.1, 0.9], "mostly"),  # q far from a converged NUTS: not a plain yes
    ],
)
def test_verdict_from_khat_shares_and_the_nuts_comparison(bad, relative, trust):
    from pyrovae.reports.diagnose import verdict

    shares = {"exact": 0.0, "good": 1.0 - bad - 0.02, "usable": 0.02, "bad": bad}
    nuts = {"points": len(relative), "max_r_hat": 1.001, "w2_relative": relative}
    got, sentence = verdict(50, shares, nuts)
    assert got == trust
    assert sentence.count(".") == sentence.count("0.") + 1  # one sentence
    assert f"> 0.7 for {bad:.0%}" in sentence
    assert ("cannot be trusted" in sentence) == (trust == "no")
    unconverged = verdict(50, shares, {**nuts, "max_r_hat": 1.2})[1]
    assert "did not converge" in unconverged
    assert "no NUTS reference" in verdict(50, shares, None)[1]


def test_class_names_of_named_data_sets():
    from pyrovae.api import _class_names
    from pyrovae.config import DataConfig, RunConfig

    fashion = _class_names(RunConfig(data=DataConfig(dataset="fashion-mnist")))
    assert fashion is not None and fashion[0] == "T-shirt/top" and len(fashion) == 10
    assert _class_names(RunConfig(data=DataConfig(dataset="digits"))) is None
    # Spelled as load_dataset takes it too.
    assert _class_names(RunConfig(data=DataConfig(dataset="Fashion_MNIST"))) == fashion


def test_incomplete_data_are_scored_on_their_observed_values(tmp_path):
    # NaN marks a missing value: the NUTS points' log-likelihoods (what az.loo reads)
    # leave it out; scored with all values, Pyro's validation refused the NaN.
    from pyrovae.model.spec import model_config
    from pyrovae.model.vae import VAE
    from pyrovae.reports.diagnose import diagnose

    config = model_config(data_shape=(1, 4, 4), hidden=(8,), latent_dim=2, missing=True,
                          likelihood="gaussian")  # fmt: skip
    vae = VAE(config).eval()
    x = torch.rand(6, 1, 4, 4)
    x[0, 0, :2] = torch.nan
    result = diagnose(vae, x, tmp_path, n=6, draws=100, nuts=2, nuts_draws=10, nuts_warmup=10,
                      chains=2, ppc_draws=5, latent_points=6)  # fmt: skip
    assert len(result.khat) == 6
    assert np.isfinite(result.inference_data.log_likelihood["x"].values).all()


def test_an_interrupted_diagnose_leaves_no_empty_folder(tmp_path, monkeypatch):
    from pyrovae.reports import diagnose as module

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(module, "_psis_draws", interrupted)
    ppca = PPCA(torch.tensor([[1.0], [0.5], [-0.3]]), torch.zeros(3), 0.5)
    images = ppca.sample(6, torch.Generator().manual_seed(2)).reshape(6, 1, 1, 3)
    with pytest.raises(KeyboardInterrupt):
        module.diagnose(linear_gaussian_vae(ppca), images, tmp_path / "new" / "report", n=6)
    assert not (tmp_path / "new").exists()


def test_diagnose_of_one_image_draws_its_ppc_without_arviz_warnings(make_vae, tmp_path):
    # One image: each replication is one value, which ArviZ's density estimate refused
    # with "Your data appears to have a single value"; its distribution function is drawn.
    vae = make_vae()
    images = torch.bernoulli(torch.full((20, 1, 4, 4), 0.3))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = diagnose(vae, images, tmp_path, n=1, draws=100, nuts=0, ppc_draws=10)
    assert not [w for w in caught if "single value" in str(w.message)], caught
    assert "data:image/png" in (tmp_path / REPORT_HTML).read_text()
    assert result.n == 1


def test_the_ppc_of_one_image_shows_its_observed_value_among_the_replications(monkeypatch):
    from pyrovae.reports import diagnostic_plots

    drawn = []
    monkeypatch.setattr(diagnostic_plots, "figure_png", lambda fig: drawn.append(fig) or "png")
    replicated = np.random.default_rng(0).uniform(0.2, 0.4, size=(1, 40, 1))
    idata = az.from_dict(
        posterior_predictive={"mean_intensity": replicated},
        observed_data={"mean_intensity": np.array([0.3])},
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        diagnostic_plots.plot_ppc(idata)
    assert not [w for w in caught if "single value" in str(w.message)]
    (ax,) = drawn[0].axes
    assert [line.get_xdata()[0] for line in ax.get_lines()] == [0.3]  # the observed value
    assert sum(patch.get_height() for patch in ax.patches) > 0  # the 40 replications
    assert ax.get_ylabel() == "density"
