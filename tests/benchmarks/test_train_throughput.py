"""benchmarks/train_throughput.py compares like with like: its hand-written plain
models give the loss pyrovae's training step gives, on the same weights and the
same random numbers, so the images/s ratio measures the code, not the model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import train_throughput  # noqa: E402

from pyrovae.inference.objectives import make_objective  # noqa: E402
from pyrovae.model.vae import VAE  # noqa: E402
from pyrovae.training.step import TrainStep, make_optimizer  # noqa: E402


def _copy_weights(plain: torch.nn.Module, vae: VAE) -> None:
    guide = vae.amortized_guide
    plain.encoder.load_state_dict(guide.encoder.state_dict())
    plain.decoder.load_state_dict(vae.decoder.state_dict())
    plain.loc.load_state_dict(guide.head.loc.state_dict())
    plain.raw_scale.load_state_dict(guide.head.raw_scale.state_dict())
    layers = getattr(guide.head, "layers", [])
    for made, layer in zip(getattr(plain, "made", []), layers, strict=True):
        made.load_state_dict(layer.nn.state_dict())


@pytest.mark.parametrize("guide", ["normal", "iaf"])
def test_the_plain_loss_is_pyrovaes_step_loss(guide):
    torch.manual_seed(0)
    config = train_throughput._config("mlp", 16, "cpu", guide)
    config.model.data_shape = (1, 28, 28)
    vae = VAE(config.model)
    plain = train_throughput.PLAIN_MODELS[guide]("mlp", (1, 28, 28))
    _copy_weights(plain, vae)
    x = torch.bernoulli(torch.full((16, 1, 28, 28), 0.3))
    step = TrainStep(vae, make_objective(config.train), make_optimizer(vae.parameters(), 1e-3))
    torch.manual_seed(1)
    pyrovae_loss = step._direct_loss(x, 1.0, x)[0]
    torch.manual_seed(1)
    plain_loss = plain(x) * x.shape[0]
    assert torch.allclose(pyrovae_loss, plain_loss, rtol=1e-5)


def test_data_dir_reaches_both_sides_and_the_memory_runs(
    tmp_path, monkeypatch, capsys, write_idx_set
):
    # The machine's own Fashion-MNIST (Debian package, user cache, download) is kept out, so
    # the run can only read the files --data-dir names. gpu.sh passes its DATA_DIR this way.
    from pyrovae.data import idx

    monkeypatch.setattr(idx, "_SYSTEM_DIRS", {})
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(idx, "_download_idx_set", None)  # nor from the network
    write_idx_set(tmp_path / "fmnist", gz=True, n_train=64, n_test=8)
    children, run = [], subprocess.run

    def memory_child(command, **options):  # keeps a child's argv, answers peak and baseline
        if "--_memory-child" not in command:
            return run(command, **options)  # platform.processor()'s uname
        children.append(command)
        return subprocess.CompletedProcess(command, 0, stdout="12.0 2.0\n")

    monkeypatch.setattr(train_throughput.subprocess, "run", memory_child)
    monkeypatch.setattr(train_throughput, "SPEED", dict(train_throughput.SPEED))
    monkeypatch.setattr(train_throughput, "DATA", dict(train_throughput.DATA))
    train_throughput.main(["--data-dir", str(tmp_path / "fmnist"), "--device", "cpu",
                           "--arch", "mlp", "--batch-size", "16", "--images", "32",
                           "--reps", "1"])  # fmt: skip
    row = capsys.readouterr().out.splitlines()[-1]
    assert row.startswith("| cpu | mlp | normal | 16 |"), row
    assert len(children) == 2  # pyrovae's and the plain loop's
    for command in children:
        assert command[command.index("--data-dir") + 1] == str(tmp_path / "fmnist")


def test_operation_counts_leave_out_the_optimizers_update():
    torch.manual_seed(0)
    config = train_throughput._config("mlp", 16, "cpu", "iaf")
    config.model.data_shape = (1, 28, 28)
    images = torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8)
    plain = train_throughput.PlainSide(config, images)
    one_by_one = train_throughput.operations_per_step(plain)  # torch's Adam, tensor by tensor
    plain.optimizer = torch.optim.Adam(plain.model.parameters(), lr=1e-3, fused=True)
    assert train_throughput.operations_per_step(plain) == one_by_one
    assert "step" not in vars(plain.optimizer)  # the update is the class's again
    pyrovae = train_throughput.PyrovaeSide(config, images)
    counted = train_throughput.operations_per_step(pyrovae)
    # The loss and its gradient: a forward and a backward pass of every layer.
    assert 100 < counted < 400 and 100 < one_by_one < 400


def test_kernels_prints_a_row_of_counts(tmp_path, monkeypatch, capsys, write_idx_set):
    from pyrovae.data import idx

    monkeypatch.setattr(idx, "_SYSTEM_DIRS", {})
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(idx, "_download_idx_set", None)
    write_idx_set(tmp_path / "fmnist", gz=True, n_train=64, n_test=8)
    monkeypatch.setattr(train_throughput, "DATA", dict(train_throughput.DATA))
    train_throughput.main(["--kernels", "--data-dir", str(tmp_path / "fmnist"), "--device", "cpu",
                           "--arch", "mlp", "--batch-size", "16"])  # fmt: skip
    row = capsys.readouterr().out.splitlines()[-1]
    cells = [cell.strip(" *") for cell in row.strip("|").split("|")]
    assert cells[:4] == ["cpu", "mlp", "normal", "16"], row
    pyrovae, plain, ratio = int(cells[4]), int(cells[5]), float(cells[6])
    assert ratio == pytest.approx(plain / pyrovae, abs=0.005)
