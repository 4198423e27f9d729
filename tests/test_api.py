from __future__ import annotations

import math
import os
import time
import warnings

import numpy as np
import pytest
import torch
from tqdm import tqdm

from pyrovae.api import (
    TEMPERATURE_RANGE,
    evaluate_run,
    latest_run,
    load_run,
    read_metrics,
    reconstruct,
    sample,
    train,
)
from pyrovae.errors import CheckpointError, ConfigError, DataError
from pyrovae.training.checkpoint import load_checkpoint, save_checkpoint


@pytest.fixture
def run_dir(tiny_config, tmp_path):
    return train(tiny_config, tmp_path / "runs" / "a", progress=False, log=lambda _: None).run_dir


def test_load_sample_reconstruct(run_dir):
    run = load_run(run_dir, device="cpu")
    assert run.config.model.data_shape == (1, 8, 8)
    assert len(run.history) == 2 == len(read_metrics(run_dir))
    images = sample(run, 10, seed=3)
    assert images.shape == (10, 1, 8, 8) and images.min() >= 0 and images.max() <= 1
    state = torch.get_rng_state()
    assert torch.equal(images, sample(run, 10, seed=3))
    assert torch.equal(state, torch.get_rng_state())  # the caller's RNG is left alone
    cooler = sample(run, 10, seed=3, temperature=0.1)
    assert not torch.equal(images, cooler)
    originals, recons = reconstruct(run, 5)
    assert originals.shape == recons.shape == (5, 1, 8, 8)


def test_latest_run_picks_newest_checkpoint(run_dir, tiny_config):
    tiny_config.train.epochs = 1
    newer = train(tiny_config, run_dir.parent / "b", progress=False, log=lambda _: None).run_dir
    now = time.time()
    os.utime(run_dir / "checkpoint.pt", (now - 100, now - 100))
    assert latest_run(run_dir.parent) == newer


def test_no_runs(tmp_path):
    with pytest.raises(CheckpointError, match="pyrovae train"):
        latest_run(tmp_path)


@pytest.mark.parametrize("temperature", [0.0, -1.0, math.inf, -math.inf, math.nan, 1e-7, 101.0])
def test_bad_temperature_is_one_line(run_dir, temperature):
    run = load_run(run_dir, device="cpu")
    with pytest.raises(ConfigError, match="--temperature must be a number from 1e-06 to 100"):
        sample(run, 4, temperature=temperature)


def test_temperature_range_ends_give_finite_images(run_dir):
    run = load_run(run_dir, device="cpu")
    for temperature in TEMPERATURE_RANGE:
        images = sample(run, 4, temperature=temperature, seed=0)
        assert torch.isfinite(images).all() and images.min() >= 0 and images.max() <= 1


def test_bad_sample_arguments(run_dir):
    run = load_run(run_dir, device="cpu")
    with pytest.raises(ConfigError):
        sample(run, 0)
    with pytest.raises(ConfigError, match="split"):
        reconstruct(run, 2, split="validation")
    # Each was a TypeError, a numpy ValueError, or an allocation of 10^9 images.
    for n, message in [("5", "whole number"), (2.5, "whole number"), (10**9, "from 1 to 100000")]:
        with pytest.raises(ConfigError, match=f"^n must be .*{message}"):
            sample(run, n)
        if n != 10**9:
            with pytest.raises(ConfigError, match="^n must be a whole number"):
                reconstruct(run, n)
    for seed in (1.5, "a", 2**70, -1):
        with pytest.raises(ConfigError, match="the seed must be"):
            sample(run, 2, seed=seed)
    assert torch.equal(sample(run, 2, seed=np.int64(3)), sample(run, 2, seed=3))
    with pytest.raises(ConfigError, match="--temperature must be a number"):
        sample(run, 2, temperature="1")
    with pytest.raises(ConfigError, match="^n must be at least 2, got -5"):
        evaluate_run(run, k=5, n=-5)  # a slice of all but 5 images before
    with pytest.raises(ConfigError, match="^k must be a whole number"):
        evaluate_run(run, k=2.5)
    for call in (lambda: sample(str(run_dir), 2), lambda: reconstruct(None, 2)):
        with pytest.raises(ConfigError, match="expected a Run from pyrovae.load_run"):
            call()  # an AttributeError before


def test_reconstruct_gives_what_the_split_holds(run_dir):
    run = load_run(run_dir, device="cpu")
    originals, recons = reconstruct(run, 1000)
    assert originals.shape == recons.shape == (360, 1, 8, 8)
    originals, _ = reconstruct(run, 100000, split="train")
    assert originals.shape[0] == 1437


def test_draws_in_batches_with_a_progress_bar(run_dir, monkeypatch):
    import pyrovae.api

    run = load_run(run_dir, device="cpu")
    monkeypatch.setattr(pyrovae.api, "BATCH_SIZE", 4)
    bars = []
    real = pyrovae.api._progress
    monkeypatch.setattr(pyrovae.api, "_progress", lambda *a: bars.append(a[1:]) or real(*a))
    assert sample(run, 10, progress=True).shape == (10, 1, 8, 8)
    originals, recons = reconstruct(run, 9, progress=False)
    assert originals.shape == recons.shape == (9, 1, 8, 8)
    assert bars == [(True, "sampling"), (False, "reconstructing")]
    assert list(real([4, 4, 2], False, "x")) == [4, 4, 2]
    assert isinstance(real([4, 4, 2], True, "x"), tqdm)


def test_non_finite_parameters_are_refused_at_load(run_dir):
    state = load_checkpoint(run_dir / "checkpoint.pt")
    state["model"]["decoder.net.1.bias"][0] = math.nan
    save_checkpoint(run_dir / "checkpoint.pt", state)
    with pytest.raises(CheckpointError, match=r"NaN or infinite parameters \(decoder"):
        load_run(run_dir)


def test_non_finite_images_are_refused(run_dir, monkeypatch):
    run = load_run(run_dir, device="cpu")
    monkeypatch.setattr(run.vae, "sample", lambda n, **_: torch.full((n, 1, 8, 8), math.inf))
    with pytest.raises(CheckpointError, match="non-finite"):
        sample(run, 3)
    with pytest.raises(ConfigError, match="temperature 0.5"):
        sample(run, 3, temperature=0.5)


# --- keyword options, a user's own networks, the caller's state ------------------------


def test_configure_routes_fields_and_component_options():
    from pyrovae.api import configure

    config = configure(dataset="digits", epochs=3, latent_dim=5, guide="iaf", flows=2, hidden=32)
    assert (config.data.dataset, config.train.epochs, config.model.latent_dim) == ("digits", 3, 5)
    assert config.model.options == {"network": {"hidden": 32}, "guide": {"flows": 2}}
    changed = configure(config, guide="normal", lr=0.01)
    assert changed.train.lr == 0.01 and "guide" not in changed.model.options
    assert config.train.lr == 1e-3  # the given config is not changed
    with pytest.raises(ConfigError, match="--learning-rate is not an option"):
        configure(learning_rate=0.1)
    # As the command line and config.toml spell it ("--model is not an option" before).
    assert configure(model="m2").model.kind == "m2"
    with pytest.raises(ConfigError, match="model= or kind="):
        configure(model="m2", kind="vae")


def test_train_takes_keyword_options(tmp_path):
    result = train(
        out=tmp_path / "run", dataset="digits", epochs=1, hidden=16, latent_dim=2,
        batch_size=512, device="cpu", progress=False, log=lambda _: None,
    )  # fmt: skip
    config = load_run(result.run_dir, device="cpu").config
    assert config.model.options["network"] == {"hidden": [16]} and config.model.latent_dim == 2


class _Encoder(torch.nn.Module):
    """Digits (batch, 1, 8, 8) -> (batch, width); its argument kept as an attribute."""

    def __init__(self, width: int = 12) -> None:
        super().__init__()
        self.width = width
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, width))

    def forward(self, x):
        return torch.tanh(self.net(x))


class _Decoder(torch.nn.Module):
    def __init__(self, latent_dim: int = 2) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.net = torch.nn.Linear(latent_dim, 64)

    def forward(self, z):
        return self.net(z).reshape(-1, 1, 8, 8)


def test_own_networks_round_trip_through_load_run_and_the_cli(tmp_path):
    from click.testing import CliRunner

    from pyrovae.cli import main

    encoder, decoder = _Encoder(width=12), _Decoder(latent_dim=2)
    result = train(
        out=tmp_path / "run", encoder=encoder, decoder=decoder, latent_dim=2, epochs=1,
        batch_size=512, device="cpu", progress=False, log=lambda _: None,
    )  # fmt: skip
    assert result.vae.decoder.module is decoder  # trained as given
    run = load_run(result.run_dir, device="cpu")
    assert run.config.model.network == "module"
    assert run.config.model.options["network"]["encoder"]["kwargs"] == {"width": 12}
    for name, value in result.vae.state_dict().items():
        assert torch.equal(run.vae.state_dict()[name], value), name
    cli = CliRunner().invoke(main, ["sample", "--run", str(result.run_dir), "-n", "3"])
    assert cli.exit_code == 0, cli.output


def test_own_networks_that_cannot_be_recorded_or_break_the_contract(tmp_path):
    with pytest.raises(ConfigError, match="'size' is not stored as an attribute"):
        train(encoder=Unrecorded(), decoder=_Decoder(), out=tmp_path / "a", progress=False)
    with pytest.raises(ConfigError, match="give both encoder= and decoder="):
        train(encoder=_Encoder(), out=tmp_path / "b", progress=False)
    quiet = {"epochs": 1, "device": "cpu", "progress": False, "log": lambda _: None}
    with pytest.raises(ConfigError, match=r"the encoder failed on a batch of shape \(2, 1, 6, 6\)"):
        train(
            out=tmp_path / "c", encoder=_Encoder(), decoder=_Decoder(), latent_dim=2,
            dataset=str(_vectors(tmp_path)), **quiet,
        )  # fmt: skip
    with pytest.raises(ConfigError, match="Local.*is defined inside a function"):

        class Local(_Encoder):
            pass

        train(encoder=Local(), decoder=_Decoder(), out=tmp_path / "e", progress=False)
    with pytest.raises(ConfigError, match=r"the decoder failed on codes of shape \(2, 4\)"):
        train(out=tmp_path / "f", encoder=_Encoder(), decoder=_Decoder(), latent_dim=4, **quiet)
    with pytest.raises(ConfigError, match=r"it must return \(batch, 1, 8, 8\)"):
        train(out=tmp_path / "d", encoder=_Encoder(), decoder=Flat(), latent_dim=2, **quiet)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


class Unrecorded(_Encoder):
    def __init__(self, size: int = 12) -> None:
        super().__init__(size)  # `size` is not kept under its own name


class Flat(_Decoder):
    def forward(self, z):
        return self.net(z)  # (batch, 64), not (batch, 1, 8, 8)


class OddEncoder(_Encoder):
    """An encoder that breaks the contract in the way ``odd`` names."""

    def __init__(self, odd: str = "float64") -> None:
        super().__init__()
        self.odd = odd
        if odd == "declared":
            self.out_features = 99  # it returns 12

    def forward(self, x):
        h = super().forward(x)
        return {"float64": h.double(), "nan": h * math.nan, "declared": h, "3-d": h[:, None]}[
            self.odd
        ]


@pytest.mark.parametrize(
    "odd, message",
    [
        ("float64", "must return finite float32 features, got torch.float64 values"),
        ("nan", "must return finite float32 features, got torch.float32 NaN or inf"),
        ("declared", "declares out_features = 99 but returns 12 features"),
        ("3-d", r"must return \(batch, n_features\), got \(2, 1, 12\)"),
    ],
)
def test_an_encoder_that_breaks_the_contract_is_refused_before_training(tmp_path, odd, message):
    # Each was a torch or Pyro traceback in the first step (a 3-D output at the first
    # evaluation), with a run folder left holding only its config.
    with pytest.raises(ConfigError, match=message):
        train(out=tmp_path / "run", encoder=OddEncoder(odd), decoder=_Decoder(), latent_dim=2,
              epochs=1, device="cpu", progress=False, log=lambda _: None)  # fmt: skip
    assert not (tmp_path / "run").exists()


def _vectors(tmp_path):
    """A data set whose images are not the decoder's (1, 8, 8)."""
    import numpy as np

    path = tmp_path / "small.npy"
    np.save(path, np.random.default_rng(0).integers(0, 2, (40, 1, 6, 6)).astype(np.uint8) * 255)
    return path


def test_train_leaves_the_callers_state_alone(tiny_config, tmp_path):
    import random

    import matplotlib
    import numpy as np

    backend, threads = matplotlib.get_backend(), torch.get_num_threads()
    torch.manual_seed(11), np.random.seed(11), random.seed(11)
    expected = (torch.rand(2), np.random.random_sample(2), random.random())
    torch.manual_seed(11), np.random.seed(11), random.seed(11)
    tiny_config.train.epochs = 1
    train(tiny_config, tmp_path / "run", progress=False, log=lambda _: None)
    drawn = (torch.rand(2), np.random.random_sample(2), random.random())
    assert torch.equal(drawn[0], expected[0]) and np.array_equal(drawn[1], expected[1])
    assert drawn[2] == expected[2]
    assert matplotlib.get_backend() == backend and torch.get_num_threads() == threads


# Data passed from Python


def _tiny(**options):
    """Options of a run that trains in about a second."""
    return {"epochs": 1, "latent_dim": 2, "hidden": (16,), "batch_size": 64, "device": "cpu",
            "progress": False, "log": lambda _: None, **options}  # fmt: skip


class _Points(torch.utils.data.Dataset):
    def __init__(self, x):
        self.x = x

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], i % 3


@pytest.mark.parametrize("kind", ["tensor", "ndarray", "dataset", "loader"])
def test_each_kind_of_python_data_trains(kind, tmp_path):
    images = torch.rand(60, 1, 6, 6)
    data = {
        "tensor": images,
        "ndarray": images[:, 0].numpy(),  # (N, H, W): read as one channel
        "dataset": _Points(images),
        "loader": torch.utils.data.DataLoader(_Points(images), batch_size=7, shuffle=True),
    }[kind]
    result = train(data=data, out=tmp_path / kind, **_tiny())
    assert result.config.data.dataset == "<memory>"
    assert result.config.model.data_shape == (1, 6, 6)
    assert result.config.data.memory == {"shape": [1, 6, 6], "dtype": "float32", "n_train": 54,
                                         "n_test": 6}  # fmt: skip
    assert math.isfinite(result.final["test_elbo"])
    assert (result.run_dir / "samples.png").exists()


def test_vectors_with_a_gaussian_likelihood_and_a_test_split(tmp_path):
    logs: list[str] = []
    x = torch.randn(80, 5) * 3 + 10  # far outside [0, 1]: fine for a Gaussian
    result = train(data=x, test_data=x[:20].numpy(), out=tmp_path / "v", likelihood="gaussian",
                   **_tiny(log=logs.append))  # fmt: skip
    assert result.config.data.memory["n_train"] == 80 and result.config.data.memory["n_test"] == 20
    assert math.isfinite(result.final["test_elbo"])
    assert {p.name for p in result.run_dir.iterdir()} >= {"loss_curve.png", "checkpoint.pt"}
    assert not (result.run_dir / "samples.png").exists()
    assert any("are not images" in line for line in logs)
    assert any("80 training and 20 test points of shape (5,), in memory" in line for line in logs)


def test_val_fraction_holds_out_that_share_with_the_seed(tmp_path):
    x = torch.rand(40, 4)
    result = train(data=x, test_fraction=0.25, seed=3, out=tmp_path / "f", **_tiny())
    assert result.config.data.memory["n_test"] == 10 and result.config.data.test_fraction == 0.25


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"data": torch.full((10, 3), 2.0)}, DataError, r"outside \[0, 1\]"),
        (
            {"data": torch.full((10, 3), 2.0), "likelihood": "continuous-bernoulli"},
            DataError,
            "outside the support of likelihood continuous-bernoulli",
        ),  # fmt: skip
        ({"data": torch.tensor([[math.nan, math.nan]] * 4)}, DataError, "every value missing"),
        ({"data": torch.tensor([[0.5, math.inf]] * 4)}, DataError, "inf values"),
        ({"data": torch.rand(10, 3), "test_data": torch.rand(4, 2)}, DataError, "shape"),
        ({"data": torch.rand(10, 3), "dataset": "digits"}, ConfigError, "not both"),
        ({"test_data": torch.rand(4, 2)}, ConfigError, "needs data="),
        ({"data": torch.rand(10, 3), "test_fraction": 1.5}, ConfigError, "test-fraction"),
    ],
)
def test_bad_python_data_fails_in_one_line_before_a_run_folder(tmp_path, options, error, message):
    with pytest.raises(error, match=message) as info:
        train(out=tmp_path / "bad", **_tiny(**options))
    assert "\n" not in str(info.value)
    assert not (tmp_path / "bad").exists()


def test_a_run_on_python_data_reloads_and_asks_for_its_data_again(tmp_path):
    from click.testing import CliRunner

    from pyrovae.api import diagnose_run, evaluate_run, resume
    from pyrovae.cli import main

    x = torch.randn(50, 3)
    run_dir = train(data=x, out=tmp_path / "m", likelihood="gaussian", **_tiny()).run_dir
    run = load_run(run_dir, device="cpu")
    assert sample(run, 4, seed=0).shape == (4, 3)
    for call in (lambda: reconstruct(run, 2), lambda: evaluate_run(run_dir, k=2, n=3),
                 lambda: diagnose_run(run_dir), lambda: resume(run_dir, epochs=2)):  # fmt: skip
        with pytest.raises(DataError, match="trained on data passed from Python.*data=X"):
            call()
    for args in (["train", "--resume", str(run_dir), "--epochs", "2"],
                 ["evaluate", "--run", str(run_dir)]):  # fmt: skip
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1 and "data passed from Python" in result.output
        assert "Traceback" not in result.output
    grid = CliRunner().invoke(
        main, ["sample", "--run", str(run_dir), "--out", str(tmp_path / "s.png")]
    )
    assert (
        grid.exit_code == 1 and "are not images" in grid.output and "Traceback" not in grid.output
    )
    originals, recons = reconstruct(run, 2, data=x)
    assert recons.shape == (2, 3) and torch.equal(originals, load_run(run_dir).data(x).test[:2])
    assert math.isfinite(evaluate_run(run_dir, k=2, n=3, data=x, metrics="elbo").to_dict()["elbo"])
    # A Run from load_run, as docs/data.md writes the calls, is evaluated as loaded.
    by_folder = evaluate_run(run_dir, k=2, n=3, data=x, metrics="elbo").to_dict()["elbo"]
    assert evaluate_run(run, k=2, n=3, data=x, metrics="elbo").to_dict()["elbo"] == by_folder
    changed = load_run(run_dir, device="cpu")
    with torch.no_grad():
        for parameter in changed.vae.parameters():
            parameter.zero_()
    assert evaluate_run(changed, k=2, n=3, data=x, metrics="elbo").to_dict()["elbo"] != by_folder
    assert diagnose_run(run, data=x, n=2, draws=100, nuts=0, out=tmp_path / "d") is not None
    with pytest.raises(ConfigError, match="expected a run folder .* got int"):
        evaluate_run(5, k=2, n=3)  # type: ignore[arg-type]
    with pytest.raises(DataError, match="same data"):
        resume(run_dir, epochs=2, data=x[:40], progress=False, log=lambda _: None)
    resumed = resume(run_dir, epochs=2, data=x, progress=False, log=lambda _: None)
    assert [row["epoch"] for row in resumed.history] == [1, 2]


def test_a_run_on_a_data_set_resumes_without_data(run_dir):
    from pyrovae.api import resume

    with pytest.raises(ConfigError, match="leave out data="):
        resume(run_dir, epochs=3, data=torch.rand(10, 1, 8, 8))


def test_load_run_leaves_the_callers_rng_alone(run_dir):
    torch.manual_seed(5)
    state = torch.get_rng_state()
    load_run(run_dir, device="cpu")
    assert torch.equal(state, torch.get_rng_state())


def test_resume_leaves_the_callers_rng_alone(run_dir):
    from pyrovae.api import resume

    torch.manual_seed(5)
    state = torch.get_rng_state()
    resume(run_dir, epochs=3, progress=False, log=lambda _: None)
    assert torch.equal(state, torch.get_rng_state())


def test_a_run_whose_data_file_changed_shape_says_so_in_one_line(tmp_path):
    """evaluate, diagnose and reconstruct read the run's data set again: a file now of
    another shape is one line, not a shape error from the encoder's first layer."""
    import numpy as np

    from pyrovae.api import train

    path = tmp_path / "d.npy"
    np.save(path, (np.random.default_rng(0).random((40, 8, 8)) > 0.5).astype(np.float32))
    train(dataset=str(path), hidden=(8,), latent_dim=2, epochs=1, out=tmp_path / "run",
          progress=False, log=lambda line: None)  # fmt: skip
    np.save(path, np.zeros((40, 7, 7), np.float32))
    with pytest.raises(DataError, match=r"trained on points of shape \(1, 8, 8\), but .* now "
                       r"has \(1, 7, 7\)") as info:  # fmt: skip
        load_run(tmp_path / "run", device="cpu").data()
    assert "\n" not in str(info.value)


def test_explore_and_probe_of_a_run_on_python_data_point_to_encode(tmp_path):
    # They said to pass the data again with data=, which neither takes.
    import pyrovae

    result = train(data=torch.rand(40, 1, 8, 8), out=tmp_path / "run", hidden=16, latent_dim=2,
                   epochs=1, device="cpu", progress=False, log=lambda _: None)  # fmt: skip
    run = load_run(result.run_dir, device="cpu")
    for call in (lambda: pyrovae.explore(run, tmp_path / "figures"), lambda: pyrovae.probe(run)):
        with pytest.raises(DataError, match=r"passed from Python: encode your points with"):
            call()


def test_resume_takes_a_run_from_load_run(run_dir):
    # evaluate_run and diagnose_run took one; resume raised a TypeError.
    from pyrovae.api import resume

    run = load_run(run_dir, device="cpu")
    result = resume(run, epochs=run.epoch + 1, progress=False, log=lambda _: None)
    assert result.run_dir == run_dir and result.history[-1]["epoch"] == run.epoch + 1


def test_a_run_whose_data_file_changed_is_warned_of_or_refused(tmp_path):
    """Scoring a run's own file: more points since training are scored with a warning
    (other splits); NaN in a run trained on complete data is one line, not a traceback."""
    from sklearn.datasets import load_digits

    import pyrovae
    from pyrovae.api import evaluate_run, reconstruct

    images = (load_digits().images[:120, None] / 16).astype(np.float32)
    path = tmp_path / "digits.npy"
    np.save(path, images)
    pyrovae.train(dataset=str(path), hidden=(16,), latent_dim=2, epochs=1, device="cpu",
                  out=tmp_path / "run", progress=False, log=lambda _: None)  # fmt: skip
    run = pyrovae.load_run(tmp_path / "run")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # unchanged: no warning
        evaluate_run(run, k=2, n=4)
    np.save(path, np.concatenate([images, images[:30]]))
    with pytest.warns(UserWarning, match=r"has changed since the run was trained \(108 \+ 12"):
        evaluate_run(run, k=2, n=4)
    images[3, 0, 2, 2] = np.nan
    np.save(path, images)
    with pytest.raises(DataError, match=r"missing values \(NaN\), but the run was trained on"):
        reconstruct(run, 2)
