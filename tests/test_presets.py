"""The named configurations of :mod:`pyrovae.presets`: each is a set of valid train
options that lands in the config, and an unknown name is refused."""

from __future__ import annotations

import pytest

from pyrovae.config import TrainConfig
from pyrovae.errors import ConfigError
from pyrovae.presets import PRESETS, preset_options


def test_fast_is_todays_defaults_best_the_flow_prior_and_paper_adds_iwae_for_longer():
    assert preset_options("fast") == {}
    best, paper = preset_options("best"), preset_options("paper")
    assert best == {"prior": "flow", "batch_size": 256, "ema": 0.999}
    assert paper == {"network": "gated", "prior": "flow", "objective": "iwae", "particles": 5,
                     "epochs": 1000, "lr_schedule": "cosine", "ema": 0.999}  # fmt: skip
    assert paper["epochs"] > TrainConfig.epochs


@pytest.mark.parametrize("name", list(PRESETS))
def test_each_presets_train_options_are_valid(name):
    fields = {f for f in TrainConfig.__dataclass_fields__}
    train = {k: v for k, v in preset_options(name).items() if k in fields}
    TrainConfig(**train, preset=name).validate()


def test_an_unknown_preset_is_refused():
    with pytest.raises(ConfigError, match="--preset must be one of fast, best, paper"):
        preset_options("nope")
    with pytest.raises(ConfigError, match="--preset"):
        TrainConfig(preset="nope").validate()
