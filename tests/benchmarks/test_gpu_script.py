"""benchmarks/gpu.sh on a CPU: the steps it refuses, those its time limit cuts or skips, and
what it passes to each step (through a stand-in interpreter that records the commands; the
steps themselves are the other benchmarks' scripts, tested beside this file)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu.sh"


@pytest.fixture
def gpu_sh(tmp_path, write_idx_set):
    write_idx_set(tmp_path / "fmnist", gz=True)

    def run(smoke: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
        variables = {
            **os.environ,
            "PYTHON": sys.executable,
            "DEVICE": "cpu",
            "DATA_DIR": str(tmp_path / "fmnist"),
            "OUT": str(tmp_path / "out"),
            **env,
        }
        return subprocess.run(
            ["bash", str(SCRIPT), *(["--smoke"] if smoke else [])],
            env=variables,
            capture_output=True,
            text=True,
            cwd=SCRIPT.parents[1],
            timeout=120,
        )

    return run


def test_an_unknown_step_is_refused_before_anything_runs(gpu_sh):
    done = gpu_sh(STEPS="fp32 fp64")
    assert done.returncode == 1
    assert "unknown step 'fp64'" in done.stderr and "== fp32" not in done.stdout


def test_steps_past_the_time_limit_are_skipped_and_reported(gpu_sh):
    # Under 20 s left (here from the start) a step is not begun: a call with a hard limit
    # keeps the time to return what the steps before wrote.
    done = gpu_sh(STEPS="fp32 evaluate", TIME_LIMIT="5")
    assert done.returncode == 1
    assert "== fp32: skipped" in done.stdout and "== evaluate: skipped" in done.stdout
    assert "failed or past their cap: fp32 evaluate" in done.stderr


@pytest.mark.parametrize("limit", ["10m", "08"])  # bash reads 08 as a bad octal number
def test_a_time_limit_that_is_not_whole_seconds_is_refused(gpu_sh, limit):
    done = gpu_sh(TIME_LIMIT=limit)
    assert done.returncode == 1 and "TIME_LIMIT must be whole seconds" in done.stderr


def test_each_step_reads_data_dir_and_its_cap_is_cut_to_the_time_left(gpu_sh, tmp_path):
    # A stand-in for python: the import checks (-c) run for real, every step's command is
    # recorded and succeeds at once.
    log = tmp_path / "commands.log"
    stand_in = tmp_path / "python"
    stand_in.write_text(
        f'#!/usr/bin/env bash\n[[ "$1" == -c ]] && exec {sys.executable} "$@"\necho "$*" >> {log}\n'
    )
    stand_in.chmod(0o755)
    done = gpu_sh(smoke=False, PYTHON=str(stand_in), TIME_LIMIT="100")
    assert done.returncode == 0, done.stdout + done.stderr
    commands = log.read_text().splitlines()
    data_dir = f"--data-dir {tmp_path / 'fmnist'}"
    throughput = [c for c in commands if "train_throughput.py" in c]
    assert len(throughput) == 5 and all(data_dir in c for c in throughput)
    assert any("time_to_quality.py" in c and data_dir in c for c in commands)
    assert any(c.startswith("-m pyrovae train") and data_dir in c for c in commands)
    caps = [int(line.split("at most ")[1].split()[0]) for line in done.stdout.splitlines()
            if line.startswith("== ") and "at most" in line]  # fmt: skip
    assert len(caps) == 7 and max(caps) <= 100  # fp32 120, quality 180, ...: each cut
