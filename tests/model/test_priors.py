"""Tests of :mod:`pyrovae.model.priors`: learned densities are normalized, their samples
follow their densities, and every prior trains, resumes, samples and reconstructs."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pyro.distributions as dist
import pytest
import torch

from pyrovae.api import Run, load_run, reconstruct, resume, sample, train
from pyrovae.config import RunConfig
from pyrovae.errors import ConfigError
from pyrovae.model.context import ModelContext
from pyrovae.model.guides.base import GUIDES, Guide
from pyrovae.model.priors.base import PRIORS, Prior
from pyrovae.model.priors.normal import StandardNormalPrior
from pyrovae.model.priors.vamp import VampPrior
from pyrovae.model.spec import model_config, resolve
from pyrovae.model.vae import VAE

#: Every registered prior with parameters of its own (plugins' included).
LEARNED = [name for name in PRIORS.names() if PRIORS.get(name) is not StandardNormalPrior]


def vae_2d(prior: str, guide: str = "normal", **given: object) -> VAE:
    """A VAE with a 2-D latent and its prior moved away from its initialization."""
    options: dict[str, object] = (
        {"flows": 2, "flow_hidden": (8,)} if "flow" in (prior, guide) or guide == "iaf" else {}
    )
    if prior in ("mog", "vamp"):
        options["prior_components"] = 3
    config = model_config(
        data_shape=(1, 4, 4),
        hidden=(8,),
        latent_dim=2,
        prior=prior,
        guide=guide,
        **{**options, **given},
    )
    vae = VAE(config)
    with torch.no_grad():
        for p in vae.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return vae


def grid(half_width: float = 20.0, n: int = 801) -> tuple[torch.Tensor, float]:
    """Points ``(n*n, 2)`` of a square grid and the area of one cell."""
    axis = torch.linspace(-half_width, half_width, n)
    zz = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), dim=-1).reshape(-1, 2)
    return zz, (axis[1] - axis[0]).item() ** 2


def test_registry_lists_every_prior() -> None:
    assert {"normal", "mog", "flow", "vamp", "hierarchical"} <= set(PRIORS.names())  # pyrovae's own


HARDTANH = {"pseudo_inputs": "hardtanh"}


@pytest.mark.parametrize(
    ("prior", "guide", "options"),
    [
        ("normal", "normal", {}),
        ("mog", "normal", {}),
        ("flow", "normal", {}),
        ("vamp", "normal", {}),
        ("vamp", "iaf", {}),
        ("vamp", "normal", HARDTANH),
        ("vamp", "iaf", {**HARDTANH, "iaf_context": 3}),
        ("vamp", "ladder", {}),
        ("hierarchical", "normal", {}),
        ("hierarchical", "ladder", {}),
    ],
)
def test_prior_density_integrates_to_one(prior: str, guide: str, options: dict) -> None:
    vae = vae_2d(prior, guide, **options)
    zz, cell = grid()
    with torch.no_grad():
        pz = vae.prior()
        assert pz.batch_shape == () and pz.event_shape == (2,)
        mass = pz.log_prob(zz).exp().sum().item() * cell
    assert mass == pytest.approx(1.0, abs=5e-3)


@pytest.mark.parametrize(
    ("prior", "options"),
    [pytest.param(name, {}, id=name) for name in PRIORS.names()]
    + [pytest.param("vamp", HARDTANH, id="vamp-hardtanh")],
)
def test_samples_follow_the_density(prior: str, options: dict) -> None:
    vae = vae_2d(prior, **options)
    zz, cell = grid()
    with torch.no_grad():
        density = vae.prior().log_prob(zz).exp() * cell  # (n*n,)
        mean = density @ zz  # (2,)
        var = density @ (zz - mean) ** 2
        draws = vae.prior.sample(20000)
        cooler = vae.prior.sample(20000, temperature=0.5)
    assert draws.shape == (20000, 2)
    stderr = (var / draws.shape[0]).sqrt()
    assert ((draws.mean(0) - mean).abs() < 4 * stderr).all(), (draws.mean(0), mean)
    # The mass of each quadrant around the mean (robust to heavy tails).
    for signs in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
        sign = torch.tensor(signs, dtype=zz.dtype)
        mass = density[((zz - mean) * sign > 0).all(-1)].sum()
        share = ((draws - mean) * sign > 0).all(-1).float().mean()
        assert abs(share - mass) < 0.015, (signs, share, mass)
    # A lower temperature concentrates the draws (for a mixture: each component).
    assert (cooler.var(0) < draws.var(0)).all()


def test_vamp_prior_mixes_the_guide_over_pseudo_inputs() -> None:
    vae = vae_2d("vamp")
    prior = vae.prior
    assert isinstance(prior, VampPrior)
    # The encoder is reached through a plain reference, not as a submodule.
    assert set(prior.state_dict()) == {"raw_inputs"}
    z = torch.randn(5, 2)
    with torch.no_grad():
        components = vae.qz(prior.pseudo_inputs())  # batch (K,)
        expected = components.log_prob(z.unsqueeze(1)).logsumexp(-1) - math.log(3)
        assert torch.allclose(prior().log_prob(z), expected, atol=1e-5)


def test_vamp_linear_pseudo_inputs_are_the_layer_unclipped_for_data_of_any_range() -> None:
    vae = vae_2d("vamp", pseudo_inputs="linear")
    prior = vae.prior
    assert isinstance(prior, VampPrior) and prior.input_range is None
    assert vae_2d("vamp", **HARDTANH).prior.input_range == (0.0, 1.0)
    assert vae_2d("vamp").prior.input_range == (0.0, 1.0)
    layer = prior.input_layer
    with torch.no_grad():
        layer.weight.mul_(20.0)
        expected = (layer.weight.T + layer.bias).reshape(3, 1, 4, 4)
        u = prior.pseudo_inputs()
    assert torch.equal(u, expected) and (u < 0).any() and (u > 1).any()


def test_vamp_hardtanh_pseudo_inputs_are_a_clipped_linear_layer_of_one_hot_inputs() -> None:
    vae = vae_2d("vamp", **HARDTANH)
    prior = vae.prior
    assert isinstance(prior, VampPrior)
    # Its own parameters only, and no sigmoid ones: runs saved before the
    # option (sigmoid, raw_inputs) keep theirs.
    assert set(prior.state_dict()) == {"input_layer.weight", "input_layer.bias"}
    layer = prior.input_layer
    with torch.no_grad():
        layer.weight.mul_(20.0)  # push some values past 0 and 1
        expected = (layer.weight.T + layer.bias).clamp(0.0, 1.0).reshape(3, 1, 4, 4)
        u = prior.pseudo_inputs()
    assert torch.equal(u, expected)
    assert (u == 0).any() and (u == 1).any()
    z = torch.randn(5, 2)
    with torch.no_grad():
        components = vae.qz(u)
        expected_log_p = components.log_prob(z.unsqueeze(1)).logsumexp(-1) - math.log(3)
        assert torch.allclose(prior().log_prob(z), expected_log_p, atol=1e-5)


def test_vamp_default_keeps_the_sigmoid_pseudo_inputs_of_older_runs() -> None:
    assert PRIORS.get("vamp").resolve_options({})["pseudo_inputs"] == "sigmoid"
    with pytest.raises(ConfigError, match="--pseudo-inputs of prior 'vamp'"):
        PRIORS.get("vamp").resolve_options({"pseudo_inputs": "tanh"})


def test_vamp_prior_refuses_guides_without_an_inverse() -> None:
    for guide in ("planar", "radial"):
        with pytest.raises(ConfigError, match="closed-form inverse"):
            resolve(model_config(prior="vamp", guide=guide))


def test_flow_prior_needs_wide_enough_made_layers() -> None:
    with pytest.raises(ConfigError, match="flow-hidden"):
        resolve(model_config(prior="flow", latent_dim=16, flow_hidden=(8,)))


@pytest.mark.parametrize(
    ("prior", "given"),
    [pytest.param(name, {}, id=name) for name in LEARNED]
    + [pytest.param("vamp", HARDTANH, id="vamp-hardtanh")],
)
def test_every_prior_trains_resumes_samples_and_reconstructs(tiny_config, tmp_path, prior, given):
    small = {"flows": 2, "flow_hidden": (8,), "prior_components": 5}
    cls = PRIORS.get(prior)
    options = {name: value for name, value in small.items() if cls.option(name) is not None}
    tiny_config.model = model_config(tiny_config.model, prior=prior, **options, **given)
    tiny_config.train.epochs = 1
    quiet = {"progress": False, "log": lambda _: None}
    first = train(tiny_config, tmp_path / "run", **quiet)
    assert math.isfinite(first.final["test_elbo"])
    resumed = resume(tmp_path / "run", epochs=2, **quiet)
    assert [row["epoch"] for row in resumed.history] == [1, 2]
    run = load_run(tmp_path / "run", device="cpu")
    for name, value in resumed.vae.prior.state_dict().items():
        assert torch.equal(run.vae.prior.state_dict()[name], value), name
    images = sample(run, n=3, temperature=0.7, seed=0)
    originals, recon = reconstruct(run, n=2, seed=0)
    assert images.shape == (3, 1, 8, 8) and recon.shape == originals.shape
    assert torch.isfinite(images).all() and ((images >= 0) & (images <= 1)).all()


def test_vamp_prior_resume_is_exact(tiny_config, tmp_path):
    tiny_config.model = model_config(tiny_config.model, prior="vamp", prior_components=5)
    quiet = {"progress": False, "log": lambda _: None}
    straight = train(tiny_config, tmp_path / "straight", **quiet)
    tiny_config.train.epochs = 1
    train(tiny_config, tmp_path / "split", **quiet)
    resumed = resume(tmp_path / "split", epochs=2, **quiet)
    for (name, a), b in zip(
        straight.vae.state_dict().items(), resumed.vae.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name


def test_cli_trains_and_samples_flexible_models(tmp_path):
    from click.testing import CliRunner

    from pyrovae.cli import main

    out = tmp_path / "run"
    options = ["--hidden", "16", "--latent-dim", "3", "--batch-size", "512", "--no-progress"]
    flexible = ["--guide", "iaf", "--flows", "2", "--flow-hidden", "8", "--prior", "vamp"]
    flexible += ["--prior-components", "4", "--objective", "iwae", "--particles", "2"]
    result = CliRunner().invoke(
        main, ["train", "--epochs", "1", "--out", str(out), *options, *flexible]
    )
    assert result.exit_code == 0, result.output
    config = load_run(out, device="cpu").config
    assert (config.model.guide, config.model.prior, config.train.objective) == (
        "iaf",
        "vamp",
        "iwae",
    )
    assert config.model.options["guide"]["flow_hidden"] == [8]
    assert config.model.options["prior"]["prior_components"] == 4
    array = tmp_path / "samples.npy"
    result = CliRunner().invoke(
        main, ["sample", "--run", str(out), "-n", "4", "--save-array", str(array)]
    )
    assert result.exit_code == 0, result.output
    bad = CliRunner().invoke(main, ["train", "--prior", "vamp", "--guide", "planar"])
    assert bad.exit_code == 1 and "closed-form inverse" in bad.output


class UntemperedPrior(Prior):
    """A user prior that implements only its density: N(1, I), no temperature."""

    name = "untempered"

    def forward(self) -> dist.TorchDistribution:
        return dist.Normal(torch.ones(self.n_latent), 1.0).to_event(1)


class LaplaceGuide(Guide):
    """A user guide whose q(z|x) has no Gaussian part to temper."""

    name = "laplace"

    def __init__(self, context: ModelContext, n_features: int) -> None:
        super().__init__(context, n_features)
        self.loc = torch.nn.Linear(n_features, context.n_latent)

    def forward(self, h: torch.Tensor) -> dist.TorchDistribution:
        return dist.Laplace(self.loc(h), 1.0).to_event(1)


@pytest.fixture
def user_components() -> Iterator[None]:
    """Register the two components above for one test, then unregister them."""
    PRIORS.register(UntemperedPrior)
    GUIDES.register(LaplaceGuide)
    yield
    PRIORS.unregister("untempered")
    GUIDES.unregister("laplace")


def in_memory_run(prior: str, guide: str) -> Run:
    options = {"prior_components": 3} if prior == "vamp" else {}
    model = model_config(
        data_shape=(1, 4, 4), hidden=(8,), latent_dim=2, prior=prior, guide=guide, **options
    )
    config = RunConfig(model=model).validate()
    return Run(run_dir=Path("unused"), config=config, vae=VAE(config.model).eval(), history=[])


def test_tempering_is_a_declared_capability(user_components: None) -> None:
    assert [PRIORS.get(name).temperable for name in ("normal", "mog", "flow")] == [True] * 3
    assert not UntemperedPrior.temperable and not LaplaceGuide.temperable
    for guide in ("normal", "iaf", "spline"):
        assert GUIDES.get(guide).temperable, guide
    assert in_memory_run("vamp", "iaf").vae.prior.temperable
    assert not in_memory_run("vamp", "laplace").vae.prior.temperable


@pytest.mark.parametrize(("prior", "guide"), [("untempered", "normal"), ("vamp", "laplace")])
def test_sampling_a_prior_that_cannot_be_tempered(
    user_components: None, prior: str, guide: str
) -> None:
    run = in_memory_run(prior, guide)
    images = sample(run, 5, seed=0)  # at temperature 1 it samples
    assert images.shape == (5, 1, 4, 4) and torch.isfinite(images).all()
    with pytest.raises(ConfigError) as info:
        sample(run, 5, temperature=0.5)
    message = str(info.value)
    assert f"prior {prior!r}" in message and "other than 1" in message
    assert "\n" not in message
    with pytest.raises(ConfigError, match="other than 1"):
        run.vae.prior.sample(5, temperature=0.5)  # the library path refuses too


def test_untempered_prior_samples_its_own_density(user_components: None) -> None:
    prior = in_memory_run("untempered", "normal").vae.prior
    draws = prior.sample(4000)
    assert draws.shape == (4000, 2)
    assert ((draws.mean(0) - 1).abs() < 4 / math.sqrt(4000)).all()


def test_vamp_tempers_through_its_guide() -> None:
    vae = vae_2d("vamp", "iaf")
    with torch.no_grad():
        draws = vae.prior.sample(4000)
        cooler = vae.prior.sample(4000, temperature=0.3)
    assert (cooler.var(0) < draws.var(0)).all()
