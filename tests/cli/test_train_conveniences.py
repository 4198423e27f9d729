"""``pyrovae train`` conveniences from the command line: --config files (and the run's own
config.toml reproducing it), --quiet/--verbose on every command, the best checkpoint
that sample and reconstruct use by default, --max-time durations, and one-line errors."""

from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner

from pyrovae.cli import main

TINY = ["--latent-dim", "2", "--batch-size", "256", "--no-progress", "--device", "cpu",
        "--eval-size", "60"]  # fmt: skip


def _one_line_error(result) -> str:
    assert result.exit_code in (1, 2), result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip().startswith("Error")]
    assert len(lines) == 1, result.output
    return lines[0]


def _rows(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_config_file_its_overrides_and_the_runs_own_toml_reproducing_it(tmp_path):
    runner = CliRunner()
    (tmp_path / "c.toml").write_text(
        "latent-dim = 2\nhidden = [16]\nbatch_size = 256\nepochs = 5\nval_fraction = 0.2\n"
        'device = "cpu"\neval_size = 60\nlr-schedule = "cosine"\n'
    )
    first = tmp_path / "first"
    result = runner.invoke(main, ["train", "--config", str(tmp_path / "c.toml"), "--epochs", "2",
                                  "--no-progress", "--out", str(first), "--verbose"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "checkpoint and metrics of epoch 1" in result.output  # a DEBUG line
    config = json.loads((first / "config.json").read_text())
    assert config["train"]["epochs"] == 2  # the command line overrides the file
    assert config["model"]["latent_dim"] == 2 and config["data"]["val_fraction"] == 0.2
    assert config["model"]["options"]["network"]["hidden"] == [16]
    assert config["train"]["lr_schedule"] == "cosine"
    again = tmp_path / "again"
    result = runner.invoke(main, ["train", "--config", str(first / "config.toml"), "--quiet",
                                  "--out", str(again)])  # fmt: skip
    assert result.exit_code == 0 and result.output == "", result.output
    assert json.loads((again / "config.json").read_text()) == config
    assert [r["test_elbo"] for r in _rows(again)] == [r["test_elbo"] for r in _rows(first)]

    # The best checkpoint by default, and said so; --checkpoint last; -q says nothing.
    result = runner.invoke(main, ["sample", "--run", str(first), "-n", "4"])
    assert result.exit_code == 0 and "using the best checkpoint" in result.output
    result = runner.invoke(main, ["reconstruct", "--run", str(first), "-n", "2",
                                  "--checkpoint", "last"])  # fmt: skip
    assert result.exit_code == 0 and "using the last checkpoint" in result.output
    assert "epoch 2" in result.output
    result = runner.invoke(main, ["sample", "--run", str(first), "-n", "4", "-q"])
    assert result.exit_code == 0 and result.output == ""


@pytest.mark.parametrize(
    "text, message",
    [
        ("latent_dim = 2\nno_such_option = 3\n", "'no_such_option' is not an option"),
        ("[train]\nepochs = 1\n", "'train' is not an option"),
        ("latent_dim = \n", "cannot read"),
        ('likelihood = "nope"\n', "nope"),
        ("latent_dim = [8]\n", "latent_dim = [8] is a list"),
        ("lr = 2024-01-01\n", "lr = 2024-01-01 is a date"),
        ("compile = [true]\n", "is a list"),
        ("epochs = 1.7\n", "'1.7' is not a valid integer"),
        ("kl_warmup = true\n", "'true' is not a valid integer"),
        ("latent-dim = 4\nlatent_dim = 5\n", "'latent-dim' and 'latent_dim' name one option"),
    ],
)
def test_a_bad_config_file_is_one_line(tmp_path, text, message):
    (tmp_path / "c.toml").write_text(text)
    result = CliRunner().invoke(
        main, ["train", *TINY, "--config", str(tmp_path / "c.toml"), "--out", str(tmp_path / "r")]
    )
    assert message in _one_line_error(result)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--patience", "2"], "give --val-fraction F"),
        (["--quiet", "--verbose"], "--quiet or --verbose, not both"),
        (["--max-time", "ten"], "duration like 90, 10m, 1.5h"),
        (["--val-fraction", "1.5"], "--val-fraction must be in [0, 1)"),
    ],
)
def test_bad_convenience_options_are_one_line(tmp_path, args, message):
    result = CliRunner().invoke(main, ["train", *TINY, *args, "--out", str(tmp_path / "r")])
    assert message in _one_line_error(result)


def test_durations_take_units():
    from pyrovae.cli.train import Duration

    parse = Duration()
    assert [parse.convert(v, None, None) for v in ("90", "90s", "10m", "1.5h", 7)] == [
        90.0, 90.0, 600.0, 5400.0, 7.0,
    ]  # fmt: skip
    with pytest.raises(click.BadParameter):
        parse.convert("-1m", None, None)


def test_resume_takes_no_config_file(tmp_path):
    (tmp_path / "c.toml").write_text("epochs = 2\n")
    result = CliRunner().invoke(
        main, ["train", "--resume", str(tmp_path), "--config", str(tmp_path / "c.toml")]
    )
    assert "not from --config" in _one_line_error(result)


@pytest.mark.parametrize("command", ["train", "sample", "reconstruct", "evaluate", "diagnose",
                                     "components"])  # fmt: skip
def test_every_command_takes_quiet_and_verbose(command):
    result = CliRunner().invoke(main, [command, "--help"])
    assert "--quiet" in result.output and "--verbose" in result.output
    if command != "components":
        assert "--no-progress" in result.output


def test_train_help_lists_the_conveniences():
    text = CliRunner().invoke(main, ["train", "--help"]).output
    for flag in ("--config", "--logger", "--val-fraction", "--test-fraction", "--patience",
                 "--lr-schedule", "--clip-grad-norm", "--max-time", "--eval-every",
                 "--eval-size"):  # fmt: skip
        assert flag in text


def test_every_config_field_is_a_train_option():
    """So that RUN/config.toml always reads back with --config."""
    from pyrovae.cli.train import NOT_IN_CONFIG_FILE, train_command
    from pyrovae.config import RunConfig
    from pyrovae.model.spec import model_config

    ctx = click.Context(train_command)
    names = {p.name for p in train_command.get_params(ctx)} - NOT_IN_CONFIG_FILE
    names |= {"kind"}
    config = RunConfig(model=model_config(guide="iaf", prior="flow"))
    assert set(config.to_options()) <= names


def test_a_preset_sets_defaults_that_options_and_config_files_override(tmp_path):
    from pyrovae.presets import PRESETS

    runner = CliRunner()
    small = "hidden = [16]\nflows = 1\nflow_hidden = [8]\n"  # a small flow prior: quick
    (tmp_path / "c.toml").write_text("particles = 2\n" + small)
    first = tmp_path / "paper"
    args = ["--preset", "paper", "--epochs", "1", "--config", str(tmp_path / "c.toml")]
    result = runner.invoke(main, ["train", *TINY, *args, "--out", str(first)])
    assert result.exit_code == 0, result.output
    config = json.loads((first / "config.json").read_text())
    train = config["train"]
    assert train["preset"] == "paper" and config["model"]["prior"] == PRESETS["paper"]["prior"]
    assert (train["objective"], train["lr_schedule"], train["ema"]) == ("iwae", "cosine", 0.999)
    assert train["epochs"] == 1 and train["particles"] == 2  # the command line, the file
    # The run's own config.toml (preset and resolved options) trains the same run again.
    again = tmp_path / "again"
    result = runner.invoke(main, ["train", "--config", str(first / "config.toml"), "--quiet",
                                  "--out", str(again)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads((again / "config.json").read_text()) == config
    assert [r["test_elbo"] for r in _rows(again)] == [r["test_elbo"] for r in _rows(first)]


def test_an_error_about_an_option_only_the_preset_set_names_the_preset(tmp_path):
    """Told to leave out --objective or --prior, a user who never typed them learns that
    --preset set them; an option typed or read from --config is theirs, and not named."""
    out = ["--out", str(tmp_path / "run")]
    line = _one_line_error(CliRunner().invoke(main, ["train", *TINY, "--preset", "paper",
                                                     "--model", "m2", *out]))  # fmt: skip
    assert "leave out --objective" in line
    assert "(--objective iwae came from --preset paper: give another value" in line
    line = _one_line_error(CliRunner().invoke(main, ["train", *TINY, "--preset", "best",
                                                     "--model", "ae", *out]))  # fmt: skip
    assert "(--prior flow came from --preset best" in line
    # Named as a component ("prior 'flow'"), from the config the options make; and
    # --prior-hidden, an option the user typed, is not --prior.
    hidden = ["train", *TINY, "--preset", "best", "--prior-hidden", "8", *out]
    line = _one_line_error(CliRunner().invoke(main, hidden))
    assert "prior 'flow'" in line and "(--prior flow came from --preset best" in line
    # --blocks belongs to a network: the preset's prior, listed among the chosen
    # components, is not the cause.
    blocks = ["train", *TINY, "--preset", "best", "--blocks", "2", *out]
    line = _one_line_error(CliRunner().invoke(main, blocks))
    assert "network 'resnet'" in line and "came from" not in line
    typed = ["train", *TINY, "--preset", "best", "--model", "ae", "--prior", "flow", *out]
    assert "came from" not in _one_line_error(CliRunner().invoke(main, typed))
    (tmp_path / "c.toml").write_text('prior = "flow"\n')
    from_file = ["train", *TINY, "--preset", "best", "--config", str(tmp_path / "c.toml"),
                 "--model", "ae", *out]  # fmt: skip
    assert "came from" not in _one_line_error(CliRunner().invoke(main, from_file))
    assert not (tmp_path / "run").exists()


def test_an_unknown_preset_is_one_line(tmp_path):
    result = CliRunner().invoke(main, ["train", *TINY, "--preset", "nope"])
    assert "'nope' is not one of 'fast', 'best', 'paper'" in _one_line_error(result)
    help_text = CliRunner().invoke(main, ["train", "--help"]).output
    assert all(name in help_text for name in ("fast:", "best:", "paper:", "--free-bits", "--ema"))


def test_a_module_networks_config_toml_trains_the_same_run_again(tmp_path, monkeypatch):
    """Its encoder and decoder are TOML tables ({"class" = ..., "kwargs" = ...})."""
    import json
    from pathlib import Path

    examples = Path(__file__).resolve().parents[2] / "examples"
    monkeypatch.syspath_prepend(str(examples))
    network = ["--network", "module", "--encoder", "own_networks:SmallEncoder",
               "--decoder", "own_networks:SmallDecoder"]  # fmt: skip
    first, second = tmp_path / "first", tmp_path / "second"
    runner = CliRunner()
    result = runner.invoke(main, ["train", *TINY, *network, "--latent-dim", "4", "--epochs", "1",
                                  "--out", str(first)])  # fmt: skip
    assert result.exit_code == 0, result.output
    config = str(first / "config.toml")
    result = runner.invoke(main, ["train", "--config", config, "--out", str(second)])
    assert result.exit_code == 0, result.output
    a, b = (json.loads((run / "config.json").read_text()) for run in (first, second))
    assert a["model"] == b["model"] and a["train"] == b["train"]


def test_a_config_files_options_of_other_components_are_left_out_with_a_warning(tmp_path):
    runner = CliRunner()
    (tmp_path / "ar.toml").write_text(
        'likelihood = "autoregressive-bernoulli"\nar_kernel = 3\nar_channels = 4\n'
        "latent_dim = 2\nepochs = 1\n"
    )
    out = tmp_path / "plain"
    config_file = ["--config", str(tmp_path / "ar.toml")]
    result = runner.invoke(main, ["train", *config_file, "--likelihood", "bernoulli", *TINY,
                                  "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "ar.toml: left out ar_channels, ar_kernel, options of components other than" in (
        result.output
    )
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["likelihood"] == "bernoulli"
    assert config["model"]["options"]["likelihood"] == {}
    # Given on the command line, such an option is still an error.
    result = runner.invoke(main, ["train", "--config", str(tmp_path / "ar.toml"),
                                  "--likelihood", "bernoulli", "--ar-kernel", "5", *TINY,
                                  "--out", str(tmp_path / "x")])  # fmt: skip
    assert "--ar-kernel is not an option of the chosen" in _one_line_error(result)
    # With the file's own components, its options are taken.
    out = tmp_path / "ar"
    result = runner.invoke(main, ["train", "--config", str(tmp_path / "ar.toml"), *TINY,
                                  "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0 and "left out" not in result.output, result.output
    options = json.loads((out / "config.json").read_text())["model"]["options"]["likelihood"]
    assert options["ar_kernel"] == 3 and options["ar_channels"] == 4
