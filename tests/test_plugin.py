"""The example plugin (``examples/plugin``), installed for real, end to end.

An installed distribution that declares components under pyrovae's entry-point
groups is usable with no edit to pyrovae: the command line lists and offers its
options, trains with them, and every command and ``load_run`` work on its runs;
once it is uninstalled, loading such a run is one line naming the distribution.

Each command runs in a fresh process, as a user's would, so that entry points
are read from the installed metadata. pip installs the plugin into a folder of
its own that only those processes have on their path: the test environment
itself is never changed, so tests running beside this one (pytest-xdist) see
pyrovae's own components only, and "uninstalled" is that folder left off the path.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PLUGIN = Path(__file__).resolve().parent.parent / "examples" / "plugin"
DISTRIBUTION = "pyrovae-plugin-example"
TINY = ["--dataset", "digits", "--epochs", "1", "--hidden", "16", "--latent-dim", "3",
        "--batch-size", "512", "--device", "cpu", "--no-progress"]  # fmt: skip


def pip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args],
        capture_output=True,
        text=True,
    )


def with_path(site: Path | None) -> dict[str, str]:
    """The environment of a process that has ``site`` (the plugin's folder) on its path."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if site is not None:
        env["PYTHONPATH"] = str(site)
    return env


def pyrovae(*args: str, site: Path | None = None) -> subprocess.CompletedProcess[str]:
    code = "import sys; from pyrovae.cli import main; sys.exit(main())"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=with_path(site),
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The folder pip installed the plugin into (``pip install --target``)."""
    site = tmp_path_factory.mktemp("plugin-site")
    isolation = ["--no-build-isolation"] if _can_build_here() else []
    result = pip("install", "--no-deps", *isolation, "--target", str(site), str(PLUGIN))
    if result.returncode != 0:
        pytest.fail(f"pip install examples/plugin failed: {result.stderr[-2000:]}")
    yield site


def _can_build_here() -> bool:
    """Whether the setuptools here builds editable wheels (70.1 has bdist_wheel built in,
    older ones need wheel): then pip needs no index to install the plugin."""
    try:
        from importlib.metadata import version

        major, minor = (int(part) for part in version("setuptools").split(".")[:2])
    except Exception:
        return False
    return (major, minor) >= (70, 1) or importlib.util.find_spec("wheel") is not None


#: Run in one fresh process (entry points are read from the installed metadata
#: there), every command through the command line's own entry function.
DRIVER = """
import json, sys
from pathlib import Path
from click.testing import CliRunner
from pyrovae.cli import main
from pyrovae import load_run

run, tiny = Path(sys.argv[1]), sys.argv[2:]

def ok(*args):
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, (args, result.output, result.exception)
    return result.output

listing = ok("components")
assert "laplace" in listing and "student-t" in listing and "--laplace-scale" in listing
assert "--dof" in ok("train", "--help")
ok("train", *tiny, "--likelihood", "laplace", "--laplace-scale", "0.2",
   "--prior", "student-t", "--dof", "3", "--out", str(run))
ok("train", "--resume", str(run), "--epochs", "2", "--no-progress")
ok("sample", "--run", str(run), "-n", "4", "--temperature", "0.8")
ok("reconstruct", "--run", str(run), "-n", "4")
ok("evaluate", "--run", str(run), "-n", "16", "-k", "20", "--json", str(run / "e.json"),
   "--no-progress", "--device", "cpu")
ok("diagnose", "--run", str(run), "-n", "4", "--draws", "100", "--nuts", "0",
   "--no-progress", "--device", "cpu")
assert json.loads((run / "e.json").read_text())
print(type(load_run(run).vae.prior).__name__, type(load_run(run).vae.likelihood).__name__)
"""


def test_the_plugin_drives_every_command(installed: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    driven = subprocess.run(
        [sys.executable, "-c", DRIVER, str(run), *TINY],
        capture_output=True,
        text=True,
        env=with_path(installed),
    )
    assert driven.returncode == 0, driven.stdout[-3000:] + driven.stderr[-3000:]
    assert driven.stdout.strip().splitlines()[-1] == "StudentTPrior LaplaceLikelihood"
    config = json.loads((run / "config.json").read_text())["model"]
    assert config["providers"]["likelihood"] == DISTRIBUTION
    assert config["options"]["prior"] == {"dof": 3.0}
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").open()] == [1, 2]

    missing = pyrovae("sample", "--run", str(run), "-n", "4")  # the plugin off the path
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    message = (missing.stdout + missing.stderr).strip()
    assert len(message.splitlines()) == 1, message
    assert "'laplace'" in message and DISTRIBUTION in message, message
