"""``--checkpoint`` and ``--weights`` on the commands that load a run: a run trained with
``--ema`` is used with the moving average of its weights by default and with the trained
weights on request, and the files written say which."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from pyrovae.cli import main

BEST_EPOCH = {"best": 1, "last": 2}


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory):
    """A digits run (hidden 16, latent 2, 2 epochs) with an EMA and a validation split,
    whose best checkpoint is the one its trainer wrote after epoch 1: kept aside while
    the run resumes for epoch 2 and put back, so that best and last differ."""
    import pyrovae
    from pyrovae.files import BEST_CHECKPOINT_NAME

    out = tmp_path_factory.mktemp("ema") / "run"
    quiet = {"progress": False, "log": lambda line: None}
    pyrovae.train(dataset="digits", hidden=(16,), latent_dim=2, epochs=1, batch_size=256,
                  ema=0.9, val_fraction=0.2, eval_size=60, device="cpu", out=out,
                  **quiet)  # fmt: skip
    first = (out / BEST_CHECKPOINT_NAME).read_bytes()
    pyrovae.resume(out, epochs=2, **quiet)
    (out / BEST_CHECKPOINT_NAME).write_bytes(first)
    return out


def _invoke(*argv: str) -> str:
    result = CliRunner().invoke(main, list(argv))
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("checkpoint", ["best", "last"])
def test_evaluate_scores_and_records_the_weights_asked_for(ema_run, tmp_path, checkpoint):
    figures = {}
    for weights in ("average", "trained"):
        path = tmp_path / f"{weights}.json"
        _invoke("evaluate", "--run", str(ema_run), "-k", "5", "-n", "20", "--metrics", "elbo",
                "--checkpoint", checkpoint, "--weights", weights, "--json", str(path))  # fmt: skip
        figures[weights] = json.loads(path.read_text())
        epoch = BEST_EPOCH[checkpoint]
        assert figures[weights]["run"] == {
            "run_dir": str(ema_run), "checkpoint": checkpoint, "epoch": epoch, "weights": weights
        }  # fmt: skip
    assert figures["average"]["elbo"] != figures["trained"]["elbo"]


def test_best_and_last_checkpoints_score_differently(ema_run, tmp_path):
    scores = {}
    for checkpoint in BEST_EPOCH:
        path = tmp_path / f"{checkpoint}.json"
        _invoke("evaluate", "--run", str(ema_run), "-k", "5", "-n", "20", "--metrics", "elbo",
                "--checkpoint", checkpoint, "--json", str(path))  # fmt: skip
        scores[checkpoint] = json.loads(path.read_text())["elbo"]
    assert scores["best"] != scores["last"]


def test_sample_reconstruct_and_encode_use_the_weights_asked_for(ema_run, tmp_path):
    outputs: dict[str, dict[str, bytes]] = {"average": {}, "trained": {}}
    for weights, seen in outputs.items():
        _invoke("sample", "--run", str(ema_run), "-n", "4", "--seed", "1", "--weights", weights,
                "--out", str(tmp_path / f"s-{weights}.png"),
                "--save-array", str(tmp_path / f"s-{weights}.npy"))  # fmt: skip
        seen["sample"] = np.load(tmp_path / f"s-{weights}.npy").tobytes()
        _invoke("reconstruct", "--run", str(ema_run), "-n", "4", "--seed", "1",
                "--weights", weights, "--out", str(tmp_path / f"r-{weights}.png"))  # fmt: skip
        seen["reconstruct"] = (tmp_path / f"r-{weights}.png").read_bytes()
        _invoke("encode", "--run", str(ema_run), "--weights", weights, "--checkpoint", "last",
                "--out", str(tmp_path / f"e-{weights}.npz"))  # fmt: skip
        seen["encode"] = np.load(tmp_path / f"e-{weights}.npz")["mean"].tobytes()
    for output in ("sample", "reconstruct", "encode"):
        assert outputs["average"][output] != outputs["trained"][output], output


def test_diagnose_reports_the_weights_it_diagnosed(ema_run, tmp_path):
    from pyrovae.api import diagnose_report

    result = diagnose_report(ema_run, out=tmp_path / "d", n=4, draws=100, nuts=0,
                             weights="trained", device="cpu")  # fmt: skip
    attrs = result.inference_data.attrs
    assert (attrs["weights"], attrs["checkpoint"], attrs["epoch"]) == ("trained", "best", "1")
    page = next((tmp_path / "d").glob("*.html")).read_text()
    assert "the trained weights of the best checkpoint (epoch 1)" in page


@pytest.mark.parametrize("command", ["sample", "reconstruct", "evaluate", "diagnose", "encode",
                                     "probe", "explore", "classify", "impute"])  # fmt: skip
def test_every_command_that_loads_a_run_takes_checkpoint_and_weights(command):
    from pyrovae.api import CHECKPOINT_CHOICES, WEIGHT_CHOICES

    text = CliRunner().invoke(main, [command, "--help"]).output
    assert "--checkpoint [best|last]" in text and "--weights [average|trained]" in text
    choices = {param.name: tuple(param.type.choices) for param in main.commands[command].params
               if param.name in ("checkpoint", "weights")}  # fmt: skip
    assert choices == {"checkpoint": CHECKPOINT_CHOICES, "weights": WEIGHT_CHOICES}
    result = CliRunner().invoke(main, [command, "--weights", "raw"])
    assert result.exit_code == 2 and "'raw' is not one of 'average', 'trained'" in result.output


ARGV = {
    "sample": [],
    "reconstruct": [],
    "evaluate": [],
    "diagnose": [],
    "encode": ["--out", "{tmp}/e.npz"],
    "probe": [],
    "explore": [],
    "classify": ["--input", "{tmp}/x.npy", "--out", "{tmp}/y.npy"],
    "impute": ["--input", "{tmp}/x.npy", "--out", "{tmp}/filled.npy"],
}


@pytest.mark.parametrize("command", sorted(ARGV))
def test_every_command_passes_checkpoint_and_weights_to_load_run(command, tmp_path, monkeypatch):
    """The options reach ``load_run`` (here a stand-in that says what it was given)."""
    import pyrovae.api
    import pyrovae.api.impute
    from pyrovae.errors import CheckpointError

    def stand_in(run_dir=None, device="auto", checkpoint="best", weights="average"):
        raise CheckpointError(f"load_run got checkpoint={checkpoint} weights={weights}")

    monkeypatch.setattr(pyrovae.api, "load_run", stand_in)
    monkeypatch.setattr(pyrovae.api.impute, "load_run", stand_in)
    np.save(tmp_path / "x.npy", np.full((2, 64), np.nan, dtype=np.float32))
    argv = [part.format(tmp=tmp_path) for part in ARGV[command]]
    result = CliRunner().invoke(
        main,
        [command, "--run", str(tmp_path), *argv, "--checkpoint", "last", "--weights", "trained"],
    )
    assert result.exit_code == 1, result.output
    assert "load_run got checkpoint=last weights=trained" in result.output


def test_impute_refuses_its_draws_before_it_loads_the_run(tmp_path, monkeypatch):
    import pyrovae.api.impute
    from pyrovae.errors import CheckpointError

    def stand_in(*args, **kwargs):
        raise CheckpointError("the run was loaded")

    monkeypatch.setattr(pyrovae.api.impute, "load_run", stand_in)
    np.save(tmp_path / "x.npy", np.full((2, 64), np.nan, dtype=np.float32))
    argv = ["impute", "--run", str(tmp_path), "--input", str(tmp_path / "x.npy"),
            "--out", str(tmp_path / "f.npy"), "--draws", "200", "--particles", "100"]  # fmt: skip
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 1 and "--draws 200 is more than --particles 100" in result.output


def test_a_missing_best_checkpoint_is_said_not_passed_over(ema_run, tmp_path):
    import shutil

    from pyrovae.files import BEST_CHECKPOINT_NAME

    copy = tmp_path / "run"
    shutil.copytree(ema_run, copy)
    (copy / BEST_CHECKPOINT_NAME).unlink()
    output = _invoke("sample", "--run", str(copy), "-n", "4", "--out", str(tmp_path / "s.png"))
    assert f"using the last checkpoint of {copy} (epoch 2) ({BEST_CHECKPOINT_NAME} is missing" in (
        output
    )
