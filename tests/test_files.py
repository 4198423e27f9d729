"""Output files: atomic, written at exactly the path given, never replacing a device or a
symlink, checked before work; the run lock."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pyrovae.errors import FileWriteError, RunLockedError
from pyrovae.files import (
    RunLock,
    atomic_write,
    atomic_write_text,
    atomic_write_via_name,
    check_distinct_files,
    check_output_file,
    check_output_folder,
    remove_stale_temporaries,
)


def test_writes_exactly_the_path_given(tmp_path):
    path = tmp_path / "array"  # no suffix: nothing may be appended
    atomic_write(path, lambda handle: handle.write(b"abc"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["array"]
    assert path.read_bytes() == b"abc"


def test_a_device_is_refused_not_replaced(tmp_path):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    with pytest.raises(FileWriteError, match="not a regular file"):
        atomic_write_text("/dev/full", "x")
    with pytest.raises(FileWriteError, match="not a regular file"):
        check_output_file("/dev/full")
    assert not os.path.isfile("/dev/full")  # still the device


def test_a_fifo_is_refused(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(FileWriteError, match="not a regular file"):
        atomic_write_text(fifo, "x")


def test_a_folder_is_refused(tmp_path):
    with pytest.raises(FileWriteError, match="is a folder"):
        atomic_write_text(tmp_path, "x")


def test_a_symlink_is_written_through(tmp_path):
    target = tmp_path / "real.json"
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    atomic_write_text(link, "new")
    assert link.is_symlink()
    assert target.read_text() == "new"


def test_failure_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "f.txt"
    path.write_text("old")

    def boom(handle):
        handle.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(FileWriteError, match="No space left on device") as info:
        atomic_write(path, boom)
    assert "\n" not in str(info.value)
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


def test_ctrl_c_leaves_no_temporary(tmp_path):
    def interrupted(handle):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "f", interrupted)
    assert list(tmp_path.iterdir()) == []


def test_write_via_name_keeps_the_suffix(tmp_path):
    seen = []

    def write(name):
        seen.append(name)
        with open(name, "w") as handle:
            handle.write("nc")

    atomic_write_via_name(tmp_path / "d.nc", write)
    assert seen[0].endswith(".nc")
    assert (tmp_path / "d.nc").read_text() == "nc"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.nc"]


def test_check_output_file_leaves_the_folder_to_the_writer_and_checks_suffix(tmp_path):
    path = tmp_path / "a" / "b" / "grid.png"
    assert check_output_file(path, (".png",)) == path
    assert not (tmp_path / "a").exists()  # work that fails before writing leaves no folder
    atomic_write_text(path, "x")  # the writer makes it
    assert path.read_text() == "x"
    assert check_output_folder(tmp_path / "c" / "d", create=False) == tmp_path / "c" / "d"
    assert not (tmp_path / "c").exists()
    with pytest.raises(FileWriteError, match="must end in .png"):
        check_output_file(tmp_path / "grid.gif", (".png",))


def test_check_output_under_a_regular_file(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(
        FileWriteError, match="cannot create the output folder .*: a file of that name"
    ):
        check_output_file(tmp_path / "file" / "out.json")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_check_output_in_a_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(FileWriteError, match="permission denied"):
            check_output_folder(folder)
        with pytest.raises(FileWriteError, match="ro/new/deeper: permission denied"):
            check_output_folder(folder / "new" / "deeper", create=False)
    finally:
        folder.chmod(0o700)


def test_check_output_in_proc_is_one_line():
    for create in (True, False):
        with pytest.raises(FileWriteError) as info:
            check_output_folder("/proc/pyrovae-test/x", create=create)
        assert "\n" not in str(info.value)


def test_stale_temporaries_are_removed(tmp_path):
    (tmp_path / ".metrics.jsonl.abc123.tmp").write_text("half")
    (tmp_path / ".samples.png.x.tmp.png").write_text("half")
    (tmp_path / "metrics.jsonl").write_text("{}")
    removed = remove_stale_temporaries(tmp_path)
    assert len(removed) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]


def test_run_lock_refuses_a_second_holder_and_names_the_first(tmp_path):
    with RunLock(tmp_path):
        # Another process (flock is per open file, so a second process is the real test).
        code = (
            "import sys; from pyrovae.files import RunLock; from pyrovae.errors import "
            "RunLockedError\ntry:\n    RunLock(sys.argv[1]).acquire()\nexcept RunLockedError "
            "as err:\n    print(err); sys.exit(3)\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True
        )
        assert result.returncode == 3, result.stderr
        assert f"pid {os.getpid()}" in result.stdout
        with pytest.raises(RunLockedError, match="in use by another pyrovae process"):
            RunLock(tmp_path).acquire()
    # Released: a new holder gets it.
    with RunLock(tmp_path) as lock:
        assert lock.held


def test_run_lock_is_released_when_the_holder_is_killed(tmp_path):
    code = (
        "import sys, time; from pyrovae.files import RunLock\n"
        "lock = RunLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(60)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError):
            RunLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    with RunLock(tmp_path):
        pass


@pytest.mark.parametrize("name", ["config.json", "config.toml", "checkpoint.pt",
                                  "checkpoint-best.pt", "metrics.jsonl"])  # fmt: skip
def test_an_output_may_not_be_a_file_a_run_needs(tmp_path, name):
    from pyrovae.errors import FileWriteError
    from pyrovae.files import check_output_file

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    assert check_output_file(run / name).name == name  # another command's config.json
    (run / "config.toml").write_text("")
    with pytest.raises(FileWriteError, match=f"is the {name} of the run in"):
        check_output_file(run / name)
    assert check_output_file(run / "samples-2.png") == (run / "samples-2.png").resolve()
    assert check_output_file(tmp_path / name).name == name  # not in a run's folder


def test_an_output_may_name_neither_an_input_nor_another_output(tmp_path):
    (tmp_path / "x.npy").write_bytes(b"points")
    (tmp_path / "link.npy").symlink_to(tmp_path / "x.npy")
    with pytest.raises(FileWriteError, match=r"--out .*link.npy is the file of --input: writing"):
        check_distinct_files({"--out": tmp_path / "link.npy"}, {"--input": tmp_path / "x.npy"})
    with pytest.raises(FileWriteError, match=r"--json .*a.npy is the file of --out too"):
        check_distinct_files({"--out": tmp_path / "a.npy", "--json": tmp_path / "b/../a.npy"})
    (tmp_path / "b").mkdir()
    check_distinct_files({"--out": tmp_path / "a.npy", "--json": None}, {"--input": None})


def test_an_empty_output_path_is_refused(tmp_path, monkeypatch):
    # Path("") is the current folder: explore --out "" wrote its figures there.
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileWriteError, match="the output file is an empty path"):
        check_output_file("")
    with pytest.raises(FileWriteError, match="the output folder is an empty path"):
        check_output_folder(" ")


def test_a_symlink_to_nothing_in_the_way_is_refused_before_the_work(tmp_path):
    (tmp_path / "dangle").symlink_to(tmp_path / "nothing")
    for check in (
        lambda: check_output_folder(tmp_path / "dangle" / "report", create=False),
        lambda: check_output_file(tmp_path / "dangle" / "grid.png"),
    ):
        with pytest.raises(FileWriteError, match="is a symbolic link to a missing target"):
            check()


def test_an_unsearchable_folder_on_the_way_is_one_line(tmp_path):
    """``Path.exists`` raises under a folder its user cannot search (root can: the check
    then runs in a child process as nobody)."""
    locked = tmp_path / "locked"
    (locked / "inner").mkdir(parents=True)
    code = (
        "import os, sys\n"
        "from pyrovae.files import check_output_file, check_output_folder\n"
        "from pyrovae.errors import FileWriteError\n"
        "if os.geteuid() == 0:\n"
        "    os.setgid(65534); os.setuid(65534)\n"
        "target = sys.argv[1]\n"
        "for check in (lambda: check_output_folder(target + '/sub', create=False),\n"
        "              lambda: check_output_file(target + '/x.json')):\n"
        "    try:\n"
        "        check()\n"
        "    except FileWriteError as err:\n"
        "        print(err)\n"
    )
    locked.chmod(0o000)
    try:
        result = subprocess.run([sys.executable, "-c", code, str(locked / "inner")],
                                capture_output=True, text=True, timeout=60)  # fmt: skip
    finally:
        locked.chmod(0o700)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and all("Permission denied" in line for line in lines), lines


def test_a_failed_download_leaves_no_empty_folders(tmp_path):
    from pyrovae.files import new_folders_removed_on_failure

    (tmp_path / "kept").mkdir()
    target = tmp_path / "kept" / "new" / "FashionMNIST" / "raw"
    with pytest.raises(OSError), new_folders_removed_on_failure(target):
        target.mkdir(parents=True)
        raise OSError("no network")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"]
    assert not any((tmp_path / "kept").iterdir())
    with pytest.raises(OSError), new_folders_removed_on_failure(target):
        target.mkdir(parents=True)
        (target / "part.gz").write_bytes(b"x")  # a folder holding a file is kept
        raise OSError("cut off")
    assert (target / "part.gz").exists()
    with new_folders_removed_on_failure(tmp_path / "ok"):
        (tmp_path / "ok").mkdir()
    assert (tmp_path / "ok").is_dir()  # kept when the block succeeds
