"""Tests of data-parallel training (:mod:`pyrovae.training.distributed`): two gloo
processes launched by ``torchrun -m pyrovae train`` take the same steps as one
process working through the same global batches, only rank 0 writes, and a
run stopped and resumed under torchrun equals an uninterrupted one."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pyrovae.config import DataConfig, RunConfig, TrainConfig
from pyrovae.data.pixels import to_unit_float
from pyrovae.data.prepare import prepare_data
from pyrovae.files import CHECKPOINT_NAME
from pyrovae.inference.objectives import make_objective
from pyrovae.model.likelihoods.base import LIKELIHOODS
from pyrovae.model.spec import model_config
from pyrovae.model.vae import VAE
from pyrovae.training.checkpoint import load_checkpoint
from pyrovae.training.distributed import rank_seed
from pyrovae.training.schedules import kl_weight
from pyrovae.training.step import TrainStep, make_optimizer

WORLD_SIZE = 2
TRAIN_OPTIONS = ["--dataset", "digits", "--hidden", "32", "--latent-dim", "4",  # fmt: skip
                 "--batch-size", "256", "--kl-warmup", "2", "--seed", "3", "--device", "cpu",
                 "--no-progress"]  # fmt: skip


def _config(epochs: int) -> RunConfig:
    return RunConfig(
        data=DataConfig(dataset="digits"),
        model=model_config(hidden=(32,), latent_dim=4),
        train=TrainConfig(epochs=epochs, batch_size=256, kl_warmup=2, seed=3, device="cpu"),
    )


def _env() -> dict[str, str]:
    """This environment, outside any torchrun job, CPU only, one thread per process."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    return env


def _torchrun(*args: str, cwd: Path) -> str:
    """Run ``torchrun --nproc-per-node 2 -m pyrovae train ARGS`` on CPU; its stdout."""
    env = _env()
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={WORLD_SIZE}", "-m", "pyrovae", "train", *args]  # fmt: skip
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done.stdout


@pytest.fixture(scope="module")
def one_epoch_run(tmp_path_factory) -> tuple[Path, str]:
    """A 1-epoch run on digits by ``pyrovae train --devices 2`` (which runs torchrun), and
    what it printed."""
    root = tmp_path_factory.mktemp("ddp")
    command = [sys.executable, "-m", "pyrovae", "train", *TRAIN_OPTIONS, "--epochs", "1",
               "--devices", str(WORLD_SIZE), "--out", str(root / "run")]  # fmt: skip
    done = subprocess.run(command, cwd=root, env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return root / "run", done.stdout


def _single_process_reference(config: RunConfig) -> dict[str, torch.Tensor]:
    """One process, the same global batches: each batch's gradient is accumulated
    over the shards the ranks take, each shard drawn from that rank's RNG stream."""
    device = torch.device("cpu")
    data = prepare_data(config, device, binary=LIKELIHOODS.get(config.model.likelihood).binary)
    config.model.data_shape = data.data_shape
    seed, batch_size = config.train.seed, config.train.batch_size
    torch.manual_seed(seed)
    data_generator = torch.Generator().manual_seed(seed)
    vae = VAE(config.model)
    rng = [torch.get_rng_state()]
    for rank in range(1, WORLD_SIZE):
        rng.append(torch.manual_seed(rank_seed(seed, rank)).get_state())
    optimizer = make_optimizer(vae.parameters(), config.train.lr)
    step = TrainStep(vae, make_objective(config.train), optimizer)
    n_train = data.train.shape[0]
    steps_per_epoch = -(-n_train // batch_size)
    order = torch.randperm(n_train, generator=data_generator)
    for i in range(steps_per_epoch):
        index = order[i * batch_size : (i + 1) * batch_size]
        beta = kl_weight(config, i, steps_per_epoch)
        optimizer.zero_grad()
        for rank, shard in enumerate(index.tensor_split(WORLD_SIZE)):
            torch.set_rng_state(rng[rank])
            x = torch.bernoulli(to_unit_float(data.train[shard]))
            (step.loss(x, beta=beta) / index.shape[0]).backward()
            rng[rank] = torch.get_rng_state()
        optimizer.step()
    return vae.state_dict()


def test_two_processes_match_one_process_on_the_same_global_batches(one_epoch_run):
    run_dir, _ = one_epoch_run
    trained = load_checkpoint(run_dir / CHECKPOINT_NAME)["model"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each torchrun worker
    try:
        reference = _single_process_reference(_config(epochs=1))
    finally:
        torch.set_num_threads(threads)
    assert trained.keys() == reference.keys()
    for name, value in reference.items():
        torch.testing.assert_close(trained[name], value, rtol=1e-5, atol=1e-6, msg=name)
    config = _config(epochs=1)
    config.model.data_shape = (1, 8, 8)
    torch.manual_seed(config.train.seed)
    initial = VAE(config.model)
    moved = max((trained[k] - v).abs().max().item() for k, v in initial.state_dict().items())
    assert moved > 1e-3  # training happened: the match is not between two untrained models


def test_only_rank_zero_writes(one_epoch_run):
    run_dir, out = one_epoch_run
    assert "data-parallel over 2 processes" in out
    assert out.count("run directory:") == 1 and out.count("epoch   1/1") == 1
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1]
    assert not [p.name for p in run_dir.iterdir() if p.name.startswith(".")]  # no temp files
    checkpoint = load_checkpoint(run_dir / CHECKPOINT_NAME)
    assert len(checkpoint["rng_ranks"]) == WORLD_SIZE
    assert not torch.equal(checkpoint["rng_ranks"][0]["torch"], checkpoint["rng_ranks"][1]["torch"])


@pytest.mark.slow  # three torchrun launches: about 30 s on 2 cores
def test_resume_under_torchrun_equals_an_uninterrupted_run(one_epoch_run, tmp_path):
    stopped = tmp_path / "stopped"
    shutil.copytree(one_epoch_run[0], stopped)
    _torchrun("--resume", str(stopped), "--epochs", "2", "--no-progress", cwd=tmp_path)
    straight = tmp_path / "straight"
    _torchrun(*TRAIN_OPTIONS, "--epochs", "2", "--out", str(straight), cwd=tmp_path)
    resumed, uninterrupted = (load_checkpoint(d / CHECKPOINT_NAME) for d in (stopped, straight))
    assert resumed["epoch"] == uninterrupted["epoch"] == 2
    for name, value in uninterrupted["model"].items():
        assert torch.equal(value, resumed["model"][name]), name
    for key in ("train_elbo", "test_elbo"):
        assert [row[key] for row in resumed["history"]] == [
            row[key] for row in uninterrupted["history"]
        ]


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_two_gpus_with_nccl(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
               "-m", "pyrovae", "train", *TRAIN_OPTIONS[:-3], "--device", "cuda", "--epochs", "1",
               "--out", str(tmp_path / "run"), "--no-progress"]  # fmt: skip
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-4000:]
    assert load_checkpoint(tmp_path / "run" / CHECKPOINT_NAME)["epoch"] == 1


def test_devices_is_dropped_from_what_the_processes_run():
    from pyrovae.cli.train import _without_devices

    argv = ["train", "--devices", "2", "--epochs", "3", "--devices=4", "--out", "r"]
    assert _without_devices(argv) == ["train", "--epochs", "3", "--out", "r"]


def test_devices_must_be_positive():
    from click.testing import CliRunner

    from pyrovae.cli import main

    result = CliRunner().invoke(main, ["train", "--devices", "0"])
    assert result.exit_code != 0 and "--devices" in result.output


def test_a_failing_process_gives_its_message_without_torchruns_traceback(tmp_path):
    from pyrovae.training.distributed import torchrun_command

    command = torchrun_command(WORLD_SIZE, ["no-such-command"])  # fails fast, in every process
    done = subprocess.run(command, cwd=tmp_path, env=_env(), capture_output=True, text=True)
    assert done.returncode == 1
    assert "No such command" in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_more_processes_than_gpus_is_a_config_error(monkeypatch):
    from pyrovae.errors import ConfigError
    from pyrovae.training.distributed import session

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError, match="2 processes on this machine need one GPU each"):
        with session(torch.device("cuda")):
            pass


_SESSION_THEN_THREADS = """\
import os
import time
import torch
from pyrovae.training.distributed import session
from pyrovae.training.step import make_optimizer
with session(torch.device("cpu")) as context:
    # Fused Adam imports torch._dynamo, which imports torch.distributed.nn.functional:
    # imported while the group exists, its defaults would hold the group.
    make_optimizer([torch.nn.Parameter(torch.ones(2))], lr=1e-3)
    context.barrier()
# gloo's threads end as the group is freed; on a loaded machine the last one may take a
# moment, so wait up to 10 s (left to interpreter shutdown, they would never end here).
deadline = time.monotonic() + 10
while True:
    tasks = os.listdir("/proc/self/task")
    threads = [open(f"/proc/self/task/{t}/comm").read().strip() for t in tasks]
    if not any("gloo" in name for name in threads) or time.monotonic() > deadline:
        break
    time.sleep(0.05)
with open(f"threads-{os.environ['RANK']}.txt", "w") as out:  # in the working directory
    out.write(",".join(sorted(threads)))
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads thread names from /proc")
def test_the_session_tears_the_process_group_down_before_it_ends(tmp_path):
    """No gloo thread may outlive the session: left to interpreter shutdown, their
    teardown raced with the peers' exit (SIGABRT after a finished run)."""
    script = tmp_path / "session.py"
    script.write_text(_SESSION_THEN_THREADS)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={WORLD_SIZE}", str(script)]  # fmt: skip
    done = subprocess.run(command, cwd=tmp_path, env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-4000:]
    for rank in range(WORLD_SIZE):
        threads = (tmp_path / f"threads-{rank}.txt").read_text()
        assert "python" in threads and "gloo" not in threads, (rank, threads)


def test_only_rank_zero_does_the_main_work_and_every_rank_gets_its_result(monkeypatch):
    """Under torchrun only rank 0 creates and locks the run directory; the others
    take its answer, or raise its error instead of waiting for it."""
    from pyrovae.errors import RunLockedError
    from pyrovae.training.distributed import Context

    sent: dict[str, object] = {}

    def broadcast(self, obj):  # rank 0 runs first and sends; rank 1 receives
        if self.is_main:
            sent["outcome"] = obj
        return sent["outcome"]

    monkeypatch.setattr(Context, "broadcast", broadcast)
    ran: list[int] = []
    results = [
        Context(rank=rank, world_size=2).on_main(lambda rank=rank: ran.append(rank) or "dir")
        for rank in (0, 1)
    ]
    assert results == ["dir", "dir"] and ran == [0]

    def refused():
        raise RunLockedError("run is in use by another pyrovae process")

    for rank in (0, 1):
        with pytest.raises(RunLockedError, match="in use"):
            Context(rank=rank, world_size=2).on_main(refused)


def test_launch_passes_sigterm_on_to_torchrun(tmp_path):
    """kill and timeout signal the launching process alone: torchrun must hear it too, or
    it and its processes train on, orphaned."""
    import signal
    import subprocess
    import sys
    import textwrap
    import time

    marker, ready = tmp_path / "got-sigterm", tmp_path / "ready"
    child = textwrap.dedent(f"""
        import pathlib, signal, sys, time
        def stop(signum, frame):
            pathlib.Path({str(marker)!r}).write_text("yes")
            sys.exit(7)
        signal.signal(signal.SIGTERM, stop)
        pathlib.Path({str(ready)!r}).write_text("")
        time.sleep(60)
    """)
    launcher = textwrap.dedent(f"""
        import sys
        from pyrovae.training import distributed
        distributed.torchrun_command = lambda nproc, args: [sys.executable, "-c", {child!r}]
        sys.exit(distributed.launch(2, ["train"]))
    """)
    process = subprocess.Popen([sys.executable, "-c", launcher])
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 7
    finally:
        process.kill()
    assert marker.read_text() == "yes"
