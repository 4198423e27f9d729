"""benchmarks/gpu.sh's guards, on a CPU: the steps it refuses and those its time limit skips
(the steps themselves are the other benchmarks' scripts, tested beside this file)."""

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

    def run(**env: str) -> subprocess.CompletedProcess[str]:
        variables = {
            **os.environ,
            "PYTHON": sys.executable,
            "DEVICE": "cpu",
            "DATA_DIR": str(tmp_path / "fmnist"),
            "OUT": str(tmp_path / "out"),
            **env,
        }
        return subprocess.run(
            ["bash", str(SCRIPT), "--smoke"],
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
