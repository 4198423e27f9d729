"""benchmarks/evaluate.py from the command line: a run it cannot load is one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "evaluate.py"


def test_a_run_that_is_not_there_is_one_line(tmp_path):
    missing = tmp_path / "no-run"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--run", str(missing), "--full"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.strip() == f"error: no run directory at {missing}"


def test_side_by_side_and_memory_rows_take_the_memory_budget_given(tmp_path):
    """Both estimators on one run, pyrovae's chunks sized by ``--memory-budget`` (read
    once), the memory worker's too; they estimate the same log p(x)."""
    import json

    import pyrovae
    from pyrovae.api import load_run
    from pyrovae.inference.importance import auto_chunk_size

    run = tmp_path / "run"
    pyrovae.train(likelihood="bernoulli", hidden=(16,), latent_dim=2, epochs=1, device="cpu",
                  out=run, progress=False, log=lambda line: None)  # fmt: skip
    n, k = 20, 400
    chunk = auto_chunk_size(load_run(run, device="cpu").vae, n, 2**20)
    assert 1 < chunk < k  # the budget, not K, sets the chunk
    common = [sys.executable, str(SCRIPT), "--run", str(run), "--n", str(n), "--k", str(k),
              "--memory-budget", "1M"]  # fmt: skip
    done = subprocess.run([*common, "--reps", "1", "--json", str(tmp_path / "s.json")],
                          capture_output=True, text=True, check=True)  # fmt: skip
    row = json.loads((tmp_path / "s.json").read_text())
    assert row["chunk"] == chunk and row["memory_budget"] == 2**20 and row["device"] == "cpu"
    assert abs(row["log_px"]["pyrovae"] - row["log_px"]["plain"]) < 1.0
    assert f"chunk {chunk}" in done.stdout
    done = subprocess.run([*common, "--memory", "--json", str(tmp_path / "m.json")],
                          capture_output=True, text=True, check=True)  # fmt: skip
    [memory] = json.loads((tmp_path / "m.json").read_text())
    assert memory["chunk"] == chunk and memory["k"] == k
    assert memory["log_px"] == pytest.approx(row["log_px"]["pyrovae"], abs=1.0)
