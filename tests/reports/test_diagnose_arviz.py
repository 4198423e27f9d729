"""The InferenceData of ``pyrovae diagnose`` (pyrovae/reports/diagnose_data.py): every
ArviZ function takes it with no extra arguments, and it says which run made it."""

from __future__ import annotations

import json
import warnings

import arviz as az
import numpy as np
import pytest
import torch

from pyrovae.reports.diagnose import REPORT_NETCDF, diagnose
from pyrovae.reports.diagnose_data import (
    COMPACT_PPC_DRAWS,
    COMPACT_Q_DRAWS,
    OBSERVED,
    VARIATIONAL_GROUP,
)

#: ArviZ's own documented warnings: PSIS-LOO's k̂ > 0.7 and WAIC's variance check
#: (https://python.arviz.org/en/stable/api/generated/arviz.loo.html, .../arviz.waic.html).
#: A VAE's harmonic-mean LOO on few short chains sets them off, as it should.
ARVIZ_DOCUMENTED = (
    "Estimated shape parameter of Pareto distribution is greater than",
    "For one or more samples the posterior variance of the log predictive densities",
)


#: Deprecations raised where ArviZ 0.23 calls the newer pandas and matplotlib
#: installed here: ArviZ's to fix, whatever the data.
DEPRECATIONS = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)


def _undocumented(caught: list[warnings.WarningMessage]) -> list[str]:
    """The warnings that are neither ArviZ's documented ones nor its own deprecations."""
    return [
        f"{w.category.__name__} at {w.filename}:{w.lineno}: {w.message}"
        for w in caught
        if not any(text in str(w.message) for text in ARVIZ_DOCUMENTED)
        and not (issubclass(w.category, DEPRECATIONS) and "/arviz/" in w.filename)
    ]


#: NUTS draws per chain: more than the compact file keeps of the replications.
NUTS_DRAWS = COMPACT_PPC_DRAWS + 5

#: Draws of q(z|x): more than the compact file keeps.
DRAWS = COMPACT_Q_DRAWS + 10


@pytest.fixture(scope="module")
def two_reports(tmp_path_factory):
    """Two VAEs (two runs) diagnosed on the same images, read back from their files: the
    first written compact (the default), the second in full."""
    from pyrovae.model.spec import model_config
    from pyrovae.model.vae import VAE

    images = torch.bernoulli(
        torch.full((8, 1, 4, 4), 0.3), generator=torch.Generator().manual_seed(0)
    )
    labels = torch.arange(8) % 3
    loaded = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        vae = VAE(model_config(data_shape=(1, 4, 4), hidden=(16,), latent_dim=2))
        out = tmp_path_factory.mktemp(f"run{seed}")
        metadata = {"run_dir": f"runs/r{seed}", "config": {"model": {"latent_dim": 2}}}
        result = diagnose(
            vae, images, out, labels=labels, class_names=["a", "b", "c"], n=6, draws=DRAWS,
            nuts=3, nuts_draws=NUTS_DRAWS, nuts_warmup=50, chains=2, ppc_draws=10,
            latent_points=8, metadata=metadata, full_netcdf=seed == 1,
        )  # fmt: skip
        loaded.append((result, az.from_netcdf(out / REPORT_NETCDF), vae))
    return loaded


def test_groups_dims_and_attributes(two_reports):
    result, idata, _ = two_reports[0]
    assert {"posterior", "log_likelihood", "posterior_predictive", "observed_data",
            "sample_stats", "constant_data", VARIATIONAL_GROUP} <= set(idata.groups())  # fmt: skip
    assert idata.posterior["z"].dims == ("chain", "draw", "datapoint", "latent")
    assert idata.posterior["z"].shape == (2, NUTS_DRAWS, 3, 2)
    assert idata.log_likelihood[OBSERVED].shape == (2, NUTS_DRAWS, 3)
    assert idata.posterior_predictive[OBSERVED].dims[:3] == ("chain", "draw", "datapoint")
    assert idata.observed_data[OBSERVED].shape == (3, 1, 4, 4)
    assert idata[VARIATIONAL_GROUP]["z"].shape == (1, COMPACT_Q_DRAWS, 6, 2)
    # k̂ needs every draw: the compact file keeps all log weights, in float32.
    assert idata.sample_stats["log_weight"].shape == (1, DRAWS, 6)
    khat = [np.nan if k is None else k for k in result.khat]
    np.testing.assert_allclose(idata.sample_stats["pareto_k"].values, khat, rtol=1e-6)
    assert list(idata.constant_data["label"].values) == [0, 1, 2, 0, 1, 2]
    attrs = idata.attrs
    for key in ("pyrovae_version", "pyro_version", "torch_version", "created_at"):
        assert attrs[key]
    assert attrs["run_dir"] == "runs/r0"
    assert json.loads(attrs["config"]) == {"model": {"latent_dim": 2}}
    assert result.inference_data is not None
    assert set(result.inference_data.groups()) == set(idata.groups())


def test_log_likelihood_is_log_p_x_given_z_at_the_nuts_draws(two_reports):
    # Recomputed from the stored draws and images with the VAE's likelihood, per point
    # summed over the 16 pixels.
    _, idata, vae = two_reports[0]
    z = torch.as_tensor(idata.posterior["z"].values)  # (chain, draw, datapoint, latent)
    x = torch.as_tensor(idata.observed_data[OBSERVED].values)  # (datapoint, 1, 4, 4)
    with torch.no_grad():
        expected = vae.px(z).log_prob(x).numpy()  # (chain, draw, datapoint)
    np.testing.assert_allclose(idata.log_likelihood[OBSERVED].values, expected, rtol=1e-5)


def test_every_arviz_function_takes_it_as_it_is(two_reports):
    from matplotlib import pyplot as plt

    (_, first, _), (_, second, _) = two_reports
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loo = az.loo(first)
        waic = az.waic(first)
        comparison = az.compare({"run 0": first, "run 1": second})
        summary = az.summary(first)
        az.plot_ppc(first)
        az.plot_trace(first)
    plt.close("all")
    assert not _undocumented(caught), _undocumented(caught)
    assert np.isfinite(loo.elpd_loo) and loo.n_data_points == 3
    assert np.isfinite(waic.elpd_waic)
    assert list(comparison.index) != [] and len(comparison) == 2
    assert summary["r_hat"].notna().all() and summary["ess_bulk"].notna().all()
    assert len(summary) == 3 * 2  # one row per NUTS point and latent unit


def test_compact_by_default_full_on_request(two_reports):
    (_, compact, _), (_, full, _) = two_reports
    assert compact[VARIATIONAL_GROUP]["z"].sizes["draw"] == COMPACT_Q_DRAWS
    assert full[VARIATIONAL_GROUP]["z"].sizes["draw"] == DRAWS
    assert compact.sample_stats["log_weight"].dtype == np.float32
    assert full.sample_stats["log_weight"].dtype == np.float64
    assert compact.posterior_predictive[OBSERVED].sizes["draw"] == COMPACT_PPC_DRAWS
    assert full.posterior_predictive[OBSERVED].sizes["draw"] == NUTS_DRAWS
