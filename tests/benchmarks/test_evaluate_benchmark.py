"""benchmarks/evaluate.py from the command line: a run it cannot load is one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
