from __future__ import annotations

import json
import re

import pytest

from pyrovae.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from pyrovae.errors import CheckpointError, ConfigError


def test_round_trip_through_json(tmp_path):
    config = RunConfig(
        data=DataConfig(dataset="mnist", data_dir="/data", binarize="static"),
        model=ModelConfig(
            latent_dim=3, data_shape=(1, 28, 28), options={"network": {"hidden": [64, 32]}}
        ),
        train=TrainConfig(beta=0.5, kl_warmup=3, epochs=7),
    )
    config.save(tmp_path / "config.json")
    loaded = RunConfig.load(tmp_path / "config.json")
    assert loaded == config
    assert isinstance(loaded.model.data_shape, tuple)


def test_a_display_range_is_written_only_where_the_data_leave_the_unit_interval(tmp_path):
    # Runs on data in [0, 1] write the config earlier versions read (no such key).
    config = RunConfig(model=ModelConfig(data_shape=(1, 8, 8)))
    config.save(tmp_path / "config.json")
    assert "display_range" not in json.loads((tmp_path / "config.json").read_text())["data"]
    config.data.display_range = [-2.5, 3.0]
    config.save(tmp_path / "config.json")
    assert RunConfig.load(tmp_path / "config.json").data.display_range == [-2.5, 3.0]


def test_missing_keys_take_defaults():
    config = RunConfig.from_dict({"train": {"epochs": 3}})
    assert config.train.epochs == 3
    assert config.model == ModelConfig()


@pytest.mark.parametrize(
    "config, message",
    [
        (RunConfig(train=TrainConfig(lr=-1.0)), "--lr"),
        (RunConfig(train=TrainConfig(epochs=0)), "--epochs"),
        (RunConfig(train=TrainConfig(beta=float("nan"))), "--beta"),
        (RunConfig(train=TrainConfig(beta=0.0)), "--beta"),
        (RunConfig(train=TrainConfig(kl_warmup=-2)), "--kl-warmup"),
        (RunConfig(train=TrainConfig(elbo="renyi")), "--elbo"),  # type: ignore[arg-type]
        (RunConfig(data=DataConfig(binarize="sometimes")), "--binarize"),  # type: ignore[arg-type]
        (RunConfig(model=ModelConfig(latent_dim=0)), "--latent-dim"),
        (RunConfig(model=ModelConfig(guide="")), "--guide"),
        (RunConfig(model=ModelConfig(options={"decoder": {}})), "keyed by"),
        (RunConfig(train=TrainConfig(seed=99999999999999999999999)), "--seed"),
        (RunConfig(train=TrainConfig(seed=-(2**63) - 1)), "--seed"),
        (RunConfig(train=TrainConfig(seed=1.5)), "--seed"),  # type: ignore[arg-type]
        (RunConfig(train=TrainConfig(seed=2**32)), "--seed"),
        (RunConfig(train=TrainConfig(particles=10**20)), "--particles must be at most"),
        (RunConfig(train=TrainConfig(batch_size=2**31)), "--batch-size must be at most"),
        (RunConfig(train=TrainConfig(kl_warmup=10**20)), "--kl-warmup"),
        (RunConfig(train=TrainConfig(threads=0)), "--threads"),
        (RunConfig(train=TrainConfig(threads=True)), "--threads"),
        (RunConfig(train=TrainConfig(threads=1.5)), "--threads"),  # type: ignore[arg-type]
    ],
)
def test_invalid_values_raise_one_line_config_errors(config, message):
    with pytest.raises(ConfigError, match=message) as info:
        config.validate()
    assert "\n" not in str(info.value)


def test_unknown_keys_are_rejected(tmp_path):
    with pytest.raises(ConfigError, match="learning_rate"):
        RunConfig.from_dict({"train": {"learning_rate": 1.0}})
    (tmp_path / "config.json").write_text(json.dumps({"train": {"learning_rate": 1.0}}))
    with pytest.raises(CheckpointError, match="not a valid pyrovae config"):
        RunConfig.load(tmp_path / "config.json")


def test_unreadable_config_is_a_checkpoint_error(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError):
        RunConfig.load(tmp_path / "config.json")
    with pytest.raises(CheckpointError, match="not a pyrovae run"):
        RunConfig.load(tmp_path / "missing.json")


@pytest.mark.parametrize(
    "options, message",
    [
        ({"hidden": ()}, "--hidden"),
        ({"likelihood": "gaussian", "obs_scale": "wide"}, "--obs-scale"),
        ({"likelihood": "gaussian", "obs_scale": "-1"}, "--obs-scale"),
        ({"hidden": (8, 10**20)}, "--hidden.*from 1 to 2147483647"),
        ({"guide": "iaf", "flows": 10**9}, "--flows.*must be at most 1024"),
    ],
)
def test_component_options_are_checked_by_their_component(options, message):
    from pyrovae.model.spec import model_config, resolve

    with pytest.raises(ConfigError, match=message) as info:
        resolve(model_config(**options))
    assert "\n" not in str(info.value)


def test_component_names_are_checked_with_the_components():
    from pyrovae.errors import ComponentMissingError
    from pyrovae.model.spec import resolve

    with pytest.raises(ComponentMissingError, match="unknown likelihood 'poisson'"):
        resolve(ModelConfig(likelihood="poisson"))


def test_an_option_no_chosen_component_takes_names_who_would():
    from pyrovae.model.spec import model_config

    with pytest.raises(ConfigError, match="--flows is not an option.*it is an option of"):
        model_config(guide="normal", flows=2)


def test_model_config_changes_a_base_and_drops_what_no_component_takes():
    from pyrovae.model.spec import model_config

    iaf = model_config(guide="iaf", flows=2, likelihood="gaussian", obs_scale="shared")
    assert model_config(iaf, flows=3).options["guide"] == {"flows": 3}
    normal = model_config(iaf, guide="normal")
    assert "guide" not in normal.options
    assert normal.options["likelihood"] == {"obs_scale": "shared"}


@pytest.mark.parametrize(
    "version, message",
    [(1, "older pyrovae (config version 1"), (99, "newer pyrovae (config version 99")],
)
def test_a_config_of_another_version_says_whether_it_is_older_or_newer(version, message):
    raw = RunConfig().to_dict() | {"version": version}
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        RunConfig.from_dict(raw)


def test_a_run_of_the_first_config_version_is_told_to_train_again(tmp_path):
    # Its model section has image_shape, not data_shape: the version, not the
    # shape, is what to say.
    old = {"version": 1, "model": {"arch": "mlp", "hidden": [400], "image_shape": [1, 8, 8]}}
    (tmp_path / "config.json").write_text(json.dumps(old))
    with pytest.raises(CheckpointError, match="written by an older pyrovae .*train the run again"):
        RunConfig.load(tmp_path / "config.json")


def test_a_run_config_without_the_shape_of_its_data_points_is_refused(tmp_path):
    # A run's config.json always records it; "shape None" was said without this check.
    raw = RunConfig(model=ModelConfig(data_shape=(1, 8, 8))).to_dict()
    raw.pop("model")
    (tmp_path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match=r"does not record the shape .*model.data_shape"):
        RunConfig.load(tmp_path / "config.json")


@pytest.mark.parametrize(("drop", "lacks"), [("data", "data"), ("train", "train"),
                                             ("data.dataset", "data.dataset")])  # fmt: skip
def test_a_run_config_without_a_section_is_refused_not_defaulted(tmp_path, drop, lacks):
    # Without its data section a resumed run trained on the digits, and recorded them.
    raw = RunConfig(model=ModelConfig(data_shape=(1, 8, 8))).to_dict()
    if drop == "data.dataset":
        raw["data"].pop("dataset")
    else:
        raw.pop(drop)
    (tmp_path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match=f"it lacks {lacks}, which every run's"):
        RunConfig.load(tmp_path / "config.json")


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"train": {"lr": None}}, "train.lr must be of type float, got None"),
        ({"train": {"epochs": 3.0}}, "train.epochs must be of type int, got 3.0"),
        ({"train": {"pyro_step": "x"}}, "train.pyro_step must be of type bool"),
        ({"train": []}, "the train section must be a table of options"),
        ({"data": {"dataset": None}}, "data.dataset must be of type str"),
        ({"data": {"binarize": 3}}, "data.binarize must be of type Literal"),
        ({"model": {"options": None}}, "model.options must be of type dict"),
        ({"model": {"providers": []}}, "model.providers must be of type dict"),
        ({"model": {"latent_dim": True}}, "model.latent_dim must be of type int"),
    ],
)
def test_a_value_of_the_wrong_type_is_refused_when_read(raw, message):
    # A hand-edited config.json: these were TypeError or AttributeError tracebacks.
    with pytest.raises(ConfigError, match=re.escape(message)):
        RunConfig.from_dict(raw)


def test_values_of_their_json_types_are_read():
    config = RunConfig.from_dict(
        {"train": {"lr": 1, "max_time": float("inf")}, "model": {"data_shape": [1, 8, 8]}}
    )
    assert config.train.lr == 1 and config.model.data_shape == (1, 8, 8)
