"""Property-based tests of the command line (Hypothesis): whatever the options and
data, a command exits 0, or exits non-zero with one ``Error:`` line, never with
a traceback.

Options are drawn from realistic and hostile values (huge, negative, NaN and
infinite numbers, odd strings, paths such as ``/dev/full``, ``/proc/x`` or a
path under a regular file), data sets from generated ``.npy``/``.npz`` arrays
of random shapes, dtypes and values and from folders of images, some of them
corrupt, truncated or decompression bombs. sample, reconstruct, evaluate and
diagnose run on one tiny run trained once per module; train runs one epoch of
a tiny network. Examples are derandomized, so CI sees the same ones every time;
``PYROVAE_FUZZ_SCALE=10`` runs ten times as many.

Hostile numbers are either small or far beyond any machine's memory (10**10 and
up, which allocators refuse at once): values in between would make a command
actually allocate tens of GB.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import re
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from pyrovae.cli import main

SCALE = float(os.environ.get("PYROVAE_FUZZ_SCALE", "1"))
TINY = ["--hidden", "32", "--latent-dim", "4", "--batch-size", "256", "--no-progress"]


def fuzz_settings(examples: int) -> settings:
    return settings(
        max_examples=max(1, round(examples * SCALE)),
        deadline=None,
        derandomize=True,
        database=None,
        # The autouse seeding fixture is function-scoped; it only resets RNGs.
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
        ],
    )


def assert_clean(result: Result, argv: list[str]) -> None:
    """Exit 0, or a non-zero exit whose last output line is one ``Error:`` line.

    With ``PYROVAE_FUZZ_LOG=FILE`` a failing example is appended to FILE (its
    command line and exception) instead of failing the test, so that one run
    lists every distinct failure rather than the first.
    """
    shown = f"pyrovae {' '.join(map(repr, argv))}\n{result.output}"
    log = os.environ.get("PYROVAE_FUZZ_LOG")
    if log:
        try:
            assert_clean_strict(result, shown)
        except AssertionError:
            problem = repr(result.exception)[:300] if result.exception else result.output[-300:]
            record = {"argv": argv, "problem": problem, "where": project_frame(result)}
            with open(log, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
        return
    assert_clean_strict(result, shown)


def project_frame(result: Result) -> str:
    """``file:line`` of the innermost frame of pyrovae's own code in the traceback."""
    import traceback

    if not result.exc_info:
        return ""
    frames = traceback.extract_tb(result.exc_info[2])
    ours = [f for f in frames if "/pyrovae/" in f.filename or "/cli/" in f.filename]
    return f"{Path(ours[-1].filename).name}:{ours[-1].lineno}" if ours else ""


def assert_clean_strict(result: Result, shown: str) -> None:
    assert "Traceback" not in result.output, shown
    if result.exit_code == 0:
        assert result.exception is None, shown
        return
    assert isinstance(result.exception, SystemExit), f"{shown}\n{result.exc_info!r}"
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("Error:"), shown
    assert not any(line.startswith("Usage:") for line in lines), shown  # one line, not three


# --------------------------------------------------------------------------- #
# Scratch space: one folder per module, hostile paths inside and outside it
# --------------------------------------------------------------------------- #


class Scratch:
    """A folder for the module's files, with fresh names and a few fixed hostile paths."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._names = itertools.count()
        self.regular_file = root / "a-regular-file"
        self.regular_file.write_text("not a folder")
        self.folder = root / "a-folder"
        self.folder.mkdir()
        self.device_link = root / "device-link.png"
        self.device_link.symlink_to("/dev/full")
        # 48 binary 8x8 images: one batch, so that an epoch takes milliseconds.
        self.tiny_data = root / "tiny.npy"
        rng = np.random.default_rng(0)
        np.save(self.tiny_data, rng.random((48, 8, 8)) < 0.3)

    def fresh(self, suffix: str = "") -> Path:
        return self.root / f"f{next(self._names)}{suffix}"

    def hostile_paths(self, suffix: str) -> list[str]:
        return [
            "/dev/full",
            "/dev/null",
            f"/dev/full{suffix}",
            "/proc/x",
            f"/proc/x/y{suffix}",
            f"/sys/x{suffix}",
            str(self.regular_file),
            str(self.regular_file / f"x{suffix}"),
            str(self.folder),
            str(self.device_link),
            "",
            " ",
            "-",
            f"no/such/folder/x{suffix}",
        ]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("fuzz")
    previous = Path.cwd()
    # Relative paths land here, and no command finds a run under ./runs by accident.
    os.chdir(root)
    try:
        yield Scratch(root)
    finally:
        os.chdir(previous)


@pytest.fixture(scope="module")
def trained(scratch: Scratch) -> Path:
    out = scratch.root / "run"
    result = CliRunner().invoke(main, ["train", "--epochs", "1", "--out", str(out), *TINY])
    assert result.exit_code == 0, result.output
    return out


# --------------------------------------------------------------------------- #
# Values: each option has realistic values and hostile ones. An example makes
# at most two options hostile, so that most of the others' combinations also
# get past the checks and run.
# --------------------------------------------------------------------------- #

HUGE = [2**31, 2**32, 2**63, 2**64 - 1, 10**10, 10**20, 99999999999999999999999]
odd_text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12
)
odd_strings = st.one_of(
    st.sampled_from(
        ["", " ", "-", "--", "nan", "inf", "-inf", "1e999", "0x10", "1,2", "é", "None"]
    ),
    odd_text,
)
hostile_ints = st.sampled_from([-(2**63), -1, 0, *HUGE])
hostile_floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, -1.0, 1e-300, 1e300, float("nan"), float("inf"), float("-inf")]),
)


def text(values: st.SearchStrategy[Any]) -> st.SearchStrategy[str]:
    """Values written as a user would type them."""
    return values.map(
        lambda v: v if isinstance(v, str) else repr(v) if isinstance(v, float) else str(v)
    )


def hostile(values: st.SearchStrategy[Any]) -> st.SearchStrategy[str]:
    """Hostile values as text, or odd strings in their place."""
    return st.one_of(text(values), odd_strings)


def fresh_path(scratch: Scratch, suffix: str) -> st.SearchStrategy[str]:
    new = st.builds(lambda: str(scratch.fresh(suffix)))
    nested = st.builds(lambda: str(scratch.fresh() / "deeper" / f"x{suffix}"))
    return st.one_of(new, nested)


def hostile_path(scratch: Scratch, suffix: str) -> st.SearchStrategy[str]:
    # Odd names stay inside the scratch folder: a command may write there.
    odd = odd_text.filter(lambda t: "/" not in t).map(lambda t: str(scratch.root / f"odd{t}"))
    return st.one_of(st.sampled_from(scratch.hostile_paths(suffix)), odd)


#: flag -> (realistic values or None if only hostile ones, hostile values, always given)
Specs = dict[str, tuple[st.SearchStrategy[str] | None, st.SearchStrategy[str], bool]]


def draw_argv(data: st.DataObject, command: str, specs: Specs, *fixed: str) -> list[str]:
    """``command``, ``fixed`` (defaults), then each option realistic, hostile or left out."""
    bad = data.draw(st.sets(st.sampled_from(sorted(specs)), max_size=2), label="hostile")
    argv = [command, *fixed]
    for flag, (good_values, bad_values, always) in specs.items():
        if flag in bad:
            argv += [flag, data.draw(bad_values, label=flag)]
        elif good_values is not None and (always or data.draw(st.booleans(), label=flag)):
            argv += [flag, data.draw(good_values, label=flag)]
    argv += data.draw(progress_flags(command), label="progress")
    return argv


def progress_flags(command: str) -> st.SearchStrategy[list[str]]:
    """``--progress``/``--no-progress`` where the command has them."""
    names = {
        opt for param in main.commands[command].params for opt in param.opts + param.secondary_opts
    }
    return st.sampled_from(
        [[], *([flag] for flag in ("--no-progress", "--progress") if flag in names)]
    )


def invoke(argv: list[str]) -> Result:
    result = CliRunner().invoke(main, argv, catch_exceptions=True)
    assert_clean(result, argv)
    if currently_in_test_context():
        # Seen with --hypothesis-show-statistics: how many examples got past the checks.
        event("exit 0" if result.exit_code == 0 else "Error")
    return result


# --------------------------------------------------------------------------- #
# sample and reconstruct
# --------------------------------------------------------------------------- #


def generator_specs(scratch: Scratch, trained: Path) -> Specs:
    bad_runs = [str(scratch.regular_file), str(scratch.folder), "/proc/x", "/dev/full", ""]
    return {
        "--run": (st.just(str(trained)), st.sampled_from(bad_runs), True),
        "--seed": (text(st.integers(0, 1000)), hostile(hostile_ints), False),
        "--mode": (st.sampled_from(["mean", "draw"]), odd_strings, False),
        "--checkpoint": (st.sampled_from(["best", "last"]), odd_strings, False),
        "--weights": (st.sampled_from(["average", "trained"]), odd_strings, False),
        "--device": (st.sampled_from(["cpu", "auto"]), st.sampled_from(["cuda", "tpu", ""]), False),
        "--out": (fresh_path(scratch, ".png") | fresh_path(scratch, ".jpg"),
                  hostile_path(scratch, ".png"), False),
    }  # fmt: skip


@given(data=st.data())
@fuzz_settings(40)
def test_fuzz_sample(scratch: Scratch, trained: Path, data: st.DataObject) -> None:
    specs = generator_specs(scratch, trained)
    specs["-n"] = (
        text(st.integers(1, 70)),
        hostile(st.sampled_from([0, -1, 4096, 4097, 100_000, 100_001, *HUGE])),
        False,
    )
    specs["--temperature"] = (text(st.floats(0.05, 3.0)), hostile(hostile_floats), False)
    specs["--save-array"] = (fresh_path(scratch, ".npy"), hostile_path(scratch, ".npy"), False)
    argv = draw_argv(data, "sample", specs)
    result = invoke(argv)
    if result.exit_code == 0:
        n = int(argv[argv.index("-n") + 1]) if "-n" in argv else 64
        if "--save-array" in argv:
            assert np.load(argv[argv.index("--save-array") + 1]).shape[0] == n
        if "--out" in argv:
            assert Path(argv[argv.index("--out") + 1]).resolve().is_file()


#: The sample and reconstruct inputs the issue names, each run once on its own.
HOSTILE_GENERATE = [
    ["sample", "--temperature", "inf"],
    ["sample", "--temperature", "nan"],
    ["sample", "--temperature", "-1"],
    ["sample", "--temperature", "0"],
    ["sample", "--save-array", "/dev/full"],
    ["sample", "--out", "/dev/full"],
    ["sample", "--save-array", "{file}/x.npy"],
    ["sample", "--out", "{file}/x.png"],
    ["sample", "--out", "/proc/x/y.png"],
    ["sample", "--save-array", "/sys/pyrovae-not-writable.npy"],
    ["sample", "-n", "100001"],
    ["sample", "--seed", str(2**64)],
    ["reconstruct", "-n", "1000"],
    ["reconstruct", "-n", "100000", "--split", "train"],
    ["reconstruct", "--out", "{file}/x.png"],
]


@pytest.mark.parametrize("args", HOSTILE_GENERATE)
def test_generate_known_hostile_values(scratch: Scratch, trained: Path, args: list[str]) -> None:
    argv = [arg.format(file=scratch.regular_file) for arg in args]
    result = invoke([*argv, "--run", str(trained)])
    assert ("wrote" in result.output) == (result.exit_code == 0)


@given(data=st.data())
@fuzz_settings(30)
def test_fuzz_reconstruct(scratch: Scratch, trained: Path, data: st.DataObject) -> None:
    specs = generator_specs(scratch, trained)
    specs["-n"] = (
        text(st.integers(1, 40)),
        hostile(st.sampled_from([0, -1, 361, 1437, 3000, *HUGE])),
        False,
    )
    specs["--split"] = (st.sampled_from(["test", "train"]), odd_strings, False)
    result = invoke(draw_argv(data, "reconstruct", specs))
    if result.exit_code == 0:
        match = re.search(r"wrote (\d+) (test|train) images", result.output)
        assert match, result.output
        assert int(match.group(1)) <= {"test": 360, "train": 1437}[match.group(2)]


# --------------------------------------------------------------------------- #
# evaluate and diagnose: small budgets only (their cost grows with -n, -k, --draws)
# --------------------------------------------------------------------------- #


def split_and_seed() -> Specs:
    return {
        "--split": (st.sampled_from(["test", "train"]), odd_strings, False),
        "--seed": (text(st.integers(0, 1000)), hostile(hostile_ints), False),
        "--device": (st.just("cpu"), st.sampled_from(["cuda", "x"]), False),
    }


@given(data=st.data())
@fuzz_settings(25)
def test_fuzz_evaluate(scratch: Scratch, trained: Path, data: st.DataObject) -> None:
    specs = split_and_seed()
    specs |= {
        "-k": (text(st.integers(1, 30)), hostile(st.sampled_from([0, -1])), True),
        "-n": (text(st.integers(2, 6)), hostile(st.sampled_from([0, 1, -1])), True),
        "--gaps": (text(st.integers(0, 1)), hostile(st.sampled_from([-1])), False),
        "--json": (fresh_path(scratch, ".json"), hostile_path(scratch, ".json"), False),
        "--checkpoint": (st.sampled_from(["best", "last"]), odd_strings, False),
        "--weights": (st.sampled_from(["average", "trained"]), odd_strings, False),
    }
    invoke(draw_argv(data, "evaluate", specs, "--run", str(trained)))


@given(data=st.data())
@fuzz_settings(12)  # each example runs PSIS (and maybe NUTS): the slowest fuzz test
def test_fuzz_diagnose(scratch: Scratch, trained: Path, data: st.DataObject) -> None:
    specs = split_and_seed()
    specs |= {
        "-n": (text(st.integers(1, 4)), hostile(st.sampled_from([0, -1])), True),
        "--draws": (text(st.integers(100, 120)), hostile(st.sampled_from([0, 99, -1])), True),
        "--nuts": (st.just("0"), hostile(st.sampled_from([-1])), True),
        "--out": (fresh_path(scratch, ""), hostile_path(scratch, ""), False),
        "--checkpoint": (st.sampled_from(["best", "last"]), odd_strings, False),
        "--weights": (st.sampled_from(["average", "trained"]), odd_strings, False),
    }
    invoke(draw_argv(data, "diagnose", specs, "--run", str(trained)))


# --------------------------------------------------------------------------- #
# train: one epoch, tiny networks, hostile options
# --------------------------------------------------------------------------- #


def spec(good: Any, bad: Any, always: bool = False) -> tuple[Any, Any, bool]:
    """Realistic and hostile values; lists are sampled, hostile ones with odd strings added."""
    good = st.sampled_from([str(v) for v in good]) if isinstance(good, list) else good
    bad = hostile(st.sampled_from(bad)) if isinstance(bad, list) else bad
    return good, bad, always


def built_in(kind: str, leave_out: tuple[str, ...] = ()) -> list[str]:
    """Every registered component of ``kind`` (so that a new one is fuzzed too), but
    those in ``leave_out``."""
    from pyrovae.model.spec import REGISTRIES

    return [name for name in REGISTRIES[kind].names() if name not in leave_out]


def train_specs(scratch: Scratch) -> Specs:
    huge = [2000000000, 10**10, 10**20]
    bad_resume = [str(scratch.regular_file), "/proc/x", "/nonexistent", str(scratch.folder)]
    bad_data = [str(scratch.regular_file), str(scratch.folder), "/dev/full", "/proc/x", "x.npy"]
    return {
        "--dataset": spec([str(scratch.tiny_data)] * 3 + ["digits"], bad_data, always=True),
        "--epochs": spec(["1"], [0, -1], always=True),
        "--hidden": spec(["8", "16,8"], ["0", "-1", "8,,8", *map(str, huge)], always=True),
        "--latent-dim": spec([1, 2, 4], [0, -5, *huge], always=True),
        # Component options: given to a component that does not take them, a one-line error.
        "--flow-hidden": spec(["8"], ["0", "-1", "1"]),
        "--batch-size": spec([512, 1024], [0, -1, 2**31, 10**20], always=True),
        "--lr": spec(text(st.floats(1e-4, 1e-2)), hostile(hostile_floats | st.just(1e8))),
        "--beta": spec(text(st.floats(0.5, 2.0)), hostile(hostile_floats)),
        "--kl-warmup": spec([0, 1, 2], [-1, 10**20]),
        "--particles": spec([1, 2], [0, -1, 10**20]),
        "--seed": spec(text(st.integers(0, 1000)), hostile(hostile_ints)),
        "--likelihood": spec(built_in("likelihood"), ["poisson"]),
        "--obs-scale": spec(["pixel", "shared", "0.1"], hostile(hostile_floats)),
        "--binarize": spec(["dynamic", "static"], ["none", "x"]),
        # module needs --network-module: bare, it is a hostile value.
        "--network": spec(built_in("network", leave_out=("module",)), ["x", "module"]),
        "--guide": spec(built_in("guide"), ["x"]),
        "--prior": spec(built_in("prior"), ["x"]),
        "--flows": spec([1, 2], [0, -1, 10**20]),
        "--prior-components": spec([2, 5], [0, -1, 10**12]),
        "--objective": spec(["elbo", "iwae"], ["x"]),
        "--elbo": spec(["meanfield", "trace"], ["x"]),
        "--device": spec(["cpu"], ["cuda", "x"]),
        "--out": spec(fresh_path(scratch, ""), hostile_path(scratch, ""), always=True),
        "--resume": (None, st.sampled_from(bad_resume), False),
    }


@given(data=st.data())
@fuzz_settings(25)
def test_fuzz_train_options(scratch: Scratch, data: st.DataObject) -> None:
    invoke(draw_argv(data, "train", train_specs(scratch)))


#: A tiny run: the hostile option, given after these, replaces its default.
TINY_TRAIN = ["--epochs", "1", "--hidden", "8", "--latent-dim", "2", "--batch-size", "512",
              "--no-progress"]  # fmt: skip


def train_with(scratch: Scratch, flag: str, value: str) -> list[str]:
    if flag == "--resume":  # which takes no other options
        return ["train", "--resume", value, "--no-progress"]
    out = [] if flag == "--out" else ["--out", str(scratch.fresh())]
    return ["train", "--dataset", str(scratch.tiny_data), *TINY_TRAIN, *out, flag, value]


@given(data=st.data())
@fuzz_settings(30)
def test_fuzz_train_one_hostile_option(scratch: Scratch, data: st.DataObject) -> None:
    specs = train_specs(scratch)
    flag = data.draw(st.sampled_from(sorted(specs)), label="flag")
    invoke(train_with(scratch, flag, data.draw(specs[flag][1], label="value")))


#: Hostile values known to have given tracebacks, each run once on its own
#: (``{file}``: a regular file), whatever the random examples above reach.
HOSTILE_TRAIN = [
    ("--seed", "99999999999999999999999"),
    ("--seed", f"{2**64 - 1} digits"),  # past the split's check, into training
    ("--seed", "-1"),
    ("--latent-dim", "2000000000"),
    ("--hidden", "2000000000"),
    ("--hidden", "8,2000000000"),
    ("--prior-components", "1000000000000"),
    ("--iaf-context", "2000000000"),
    ("--out", "/proc/x"),
    ("--out", "{file}/x"),
    ("--out", "/sys/pyrovae-not-writable"),
    ("--lr", "1e8"),
    ("--lr", "nan"),
    ("--batch-size", str(10**20)),
    ("--particles", str(10**20)),
    ("--kl-warmup", str(10**20)),
    ("--dataset", "/dev/full"),
    ("--resume", "{file}"),
    ("--resume", "/proc/x"),
]


@pytest.mark.parametrize(("flag", "value"), HOSTILE_TRAIN)
def test_train_known_hostile_values(scratch: Scratch, flag: str, value: str) -> None:
    value, *dataset = value.format(file=scratch.regular_file).split(" ")
    argv = train_with(scratch, flag, value)
    if dataset:
        argv += ["--dataset", *dataset]
    if flag == "--prior-components":
        argv += ["--prior", "mog"]
    if flag == "--iaf-context":
        argv += ["--guide", "iaf"]
    invoke(argv)


# --------------------------------------------------------------------------- #
# train on generated data: arrays and folders of images. Each data set is
# realistic in all but at most two aspects (shape, dtype, values, ...).
# --------------------------------------------------------------------------- #

GOOD_DTYPES = ["uint8", "float32", "float64", "bool"]
BAD_DTYPES = ["int8", "int64", "uint16", "float16", ">f8", "complex64", "U3", "O"]
SPECIALS = [np.nan, np.inf, -np.inf, -1.0, 2.0, 255.0, 256.0, 1e300]
ARRAY_ASPECTS = ["shape", "dtype", "values", "labels", "layout", "truncated"]


def image_array_shape(draw: Callable[..., Any], hostile: bool) -> tuple[int, ...]:
    if hostile:
        ndim = draw(st.integers(1, 5))
        return tuple(draw(st.lists(st.integers(0, 6), min_size=ndim, max_size=ndim)))
    n, side = draw(st.integers(2, 40)), draw(st.sampled_from([2, 3, 4, 6]))
    layout = draw(st.sampled_from(["NHW", "NCHW", "NHWC"]))
    channels = draw(st.sampled_from([1, 3]))
    return {"NHW": (n, side, side), "NCHW": (n, channels, side, side)}.get(
        layout, (n, side, side, channels)
    )


def pixel_values(draw: Callable[..., Any], shape: tuple[int, ...], hostile: bool) -> np.ndarray:
    values = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).random(shape)
    if draw(st.booleans()):
        values = np.round(values)  # binary images, which a Bernoulli likelihood takes as they are
    if hostile and values.size:
        flat = values.reshape(-1)
        for _ in range(draw(st.integers(1, 3))):
            flat[draw(st.integers(0, flat.size - 1))] = draw(st.sampled_from(SPECIALS))
    return values


@st.composite
def array_files(draw: Callable[..., Any], scratch: Scratch) -> Path:
    """A .npy or .npz data set, realistic but for at most two hostile aspects."""
    bad = draw(st.sets(st.sampled_from(ARRAY_ASPECTS), max_size=2))
    shape = image_array_shape(draw, "shape" in bad)
    dtype = np.dtype(draw(st.sampled_from(BAD_DTYPES if "dtype" in bad else GOOD_DTYPES)))
    values = pixel_values(draw, shape, "values" in bad)
    if dtype.kind in "iu":
        values = np.nan_to_num(values * 255, posinf=0, neginf=0)
    with np.errstate(all="ignore"):
        array = values.astype(dtype)
    n = shape[0] if shape else 0
    labels = np.arange(n) % 3
    if "labels" in bad:
        labels = draw(st.sampled_from([np.zeros(n + 1), np.full(n, 0.5), np.array(["a"] * n)]))
    layouts = ["two arrays", "other keys", "split, one empty"]
    layouts = layouts if "layout" in bad else ["npy", "x/y", "split"]
    path = write_array_file(scratch, array, draw(st.sampled_from(layouts)), labels)
    if "truncated" in bad and path.stat().st_size > 8:
        cut = draw(st.integers(0, path.stat().st_size - 1))
        path.write_bytes(path.read_bytes()[:cut])
    return path


def write_array_file(scratch: Scratch, array: np.ndarray, layout: str, labels: np.ndarray) -> Path:
    path = scratch.fresh(".npy" if layout == "npy" else ".npz")
    arrays = {
        "x/y": {"x": array, "y": labels},
        "split": {"x_train": array, "x_test": array[:1], "y_train": labels, "y_test": labels[:1]},
        "split, one empty": {"x_train": array, "x_test": array[:0]},
        "two arrays": {"first": array, "second": array},
        "other keys": {"labels": labels},
    }
    if layout == "npy":
        np.save(path, array, allow_pickle=True)  # object arrays too, which loading refuses
    else:
        np.savez(path, **arrays[layout])
    return path


def tiny_training(likelihood: str, binarize: str) -> list[str]:
    return ["--likelihood", likelihood, "--binarize", binarize, "--epochs", "1", "--hidden", "8",
            "--latent-dim", "2", "--batch-size", "256", "--no-progress"]  # fmt: skip


@given(data=st.data())
@fuzz_settings(30)
def test_fuzz_train_on_arrays(scratch: Scratch, data: st.DataObject) -> None:
    path = data.draw(array_files(scratch))
    likelihood = data.draw(st.sampled_from(["bernoulli", "gaussian", "continuous-bernoulli"]))
    binarize = data.draw(st.sampled_from(["dynamic", "static", "none"]))
    out = str(scratch.fresh())
    invoke(["train", "--dataset", str(path), *tiny_training(likelihood, binarize), "--out", out])


def png_claiming(width: int, height: int) -> bytes:
    """A PNG header that claims ``width`` x ``height`` pixels and carries none."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        body = kind + payload
        return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def encode(pixels: np.ndarray, mode: str, image_format: str) -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(pixels).convert(mode)
    (image.convert("RGB") if image_format == "JPEG" else image).save(buffer, format=image_format)
    return buffer.getvalue()


@st.composite
def bad_image(draw: Callable[..., Any], good: bytes) -> tuple[str, bytes]:
    """A file that spoils a folder: corrupt, truncated, a bomb, another size or mode."""
    kind = draw(st.sampled_from(["truncated", "garbage", "empty", "bomb", "size", "16-bit"]))
    if kind == "truncated":
        return "png", good[: draw(st.integers(0, max(0, len(good) - 13)))]
    if kind == "garbage":
        return "png", draw(st.binary(max_size=64))
    if kind == "empty":
        return "png", b""
    if kind == "bomb":
        return "png", png_claiming(2**16, draw(st.sampled_from([2**15, 2**16])))
    if kind == "size":
        return "png", encode(np.zeros((7, 5, 3), np.uint8), "L", "PNG")
    buffer = io.BytesIO()
    Image.fromarray(np.arange(16, dtype=np.uint16).reshape(4, 4) * 4000).save(buffer, "PNG")
    return "png", buffer.getvalue()


@given(data=st.data())
@fuzz_settings(25)
def test_fuzz_train_on_image_folders(scratch: Scratch, data: st.DataObject) -> None:
    side = data.draw(st.sampled_from([4, 6]))
    mode = data.draw(st.sampled_from(["L", "RGB", "RGBA", "P", "1"]))
    image_format = data.draw(st.sampled_from(["PNG", "JPEG"]))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    files = [
        ("png" if image_format == "PNG" else "jpg", encode(pixels, mode, image_format))
        for pixels in rng.integers(0, 256, (data.draw(st.integers(0, 6)), side, side, 3), np.uint8)
    ]
    if files and data.draw(st.booleans()):
        files.insert(data.draw(st.integers(0, len(files))), data.draw(bad_image(files[0][1])))
    folder = scratch.fresh()
    folder.mkdir()
    classes = data.draw(st.booleans())
    for i, (suffix, content) in enumerate(files):
        where = folder / (f"class{i % 2}" if classes else "")
        where.mkdir(exist_ok=True)
        (where / f"{i}.{suffix}").write_bytes(content)
    likelihood = data.draw(st.sampled_from(["gaussian", "bernoulli"]))
    out = str(scratch.fresh())
    invoke(["train", "--dataset", str(folder), *tiny_training(likelihood, "static"), "--out", out])
