"""Run directories (:mod:`pyrovae.training.rundir`): created and locked by one writer, released
without leaving a lock file, and what a failed fresh run created removed."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pyrovae.errors import FileWriteError, RunLockedError
from pyrovae.files import LOCK_NAME, RunLock
from pyrovae.training import rundir


def test_claim_creates_locks_and_releases_without_a_lock_file(tmp_path):
    run_dir = tmp_path / "a" / "b" / "run"
    claim = rundir.claim(run_dir, create=True)
    assert claim.created == [run_dir, run_dir.parent, run_dir.parent.parent]
    with pytest.raises(RunLockedError):
        RunLock(run_dir).acquire()
    claim.release()
    assert run_dir.is_dir() and not (run_dir / LOCK_NAME).exists()
    claim.release()  # idempotent


def test_discard_removes_only_the_folders_the_claim_made_and_that_stayed_empty(tmp_path):
    (tmp_path / "a").mkdir()
    claim = rundir.claim(tmp_path / "a" / "b" / "run", create=True)
    (tmp_path / "a" / "b" / "other-run").mkdir()  # made meanwhile by someone else
    claim.discard()
    assert sorted(p.name for p in (tmp_path / "a" / "b").iterdir()) == ["other-run"]


def test_a_claim_refused_by_the_holder_leaves_the_holders_folder(tmp_path):
    holder = rundir.claim(tmp_path / "run", create=True)
    with pytest.raises(RunLockedError, match=r"in use by another pyrovae process \(pid"):
        rundir.claim(tmp_path / "run", create=True)
    assert (tmp_path / "run" / LOCK_NAME).exists()
    holder.release()


def test_exclusive_claims_refuse_an_existing_folder(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(FileExistsError):
        rundir.claim(tmp_path / "run", create=True, exclusive=True)


def test_a_folder_that_cannot_be_made_is_a_file_write_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(FileWriteError, match="cannot create the run directory"):
        rundir.claim(tmp_path / "file" / "run", create=True)
    assert (tmp_path / "file").read_text() == ""


def test_a_lock_file_removed_while_another_process_waited_on_it_is_not_trusted(
    tmp_path, monkeypatch
):
    """Opened before its holder removed it, the old file's lock guards nothing: the
    acquirer locks the file the path names now, where a third process is refused."""
    from pyrovae import files

    claim = rundir.claim(tmp_path, create=False)
    stale = open(tmp_path / LOCK_NAME, "a+", encoding="utf-8")  # noqa: SIM115 (opened early)
    claim.release()  # removes the file it held
    opened: list[object] = []

    def open_the_stale_file_first(path, *args, **kwargs):
        opened.append(path)
        return stale if len(opened) == 1 else open(path, *args, **kwargs)

    monkeypatch.setattr(files, "open", open_the_stale_file_first, raising=False)
    late = RunLock(tmp_path).acquire()
    monkeypatch.undo()
    assert len(opened) == 2  # retried on the file the path names
    script = (
        "import sys; from pyrovae.files import RunLock; from pyrovae.errors import RunLockedError\n"
        "try:\n    RunLock(sys.argv[1]).acquire()\nexcept RunLockedError:\n    sys.exit(3)\n"
    )
    third = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True)
    assert third.returncode == 3, third.stderr
    late.release()


def test_stale_temporaries_are_removed_only_under_the_lock(tmp_path):
    (tmp_path / ".metrics.jsonl.abc.tmp.jsonl").write_text("{")
    (tmp_path / "metrics.jsonl").write_text("{}\n")
    claim = rundir.claim(tmp_path, create=False)
    removed = rundir.clean_stale_temporaries(claim)
    assert [p.name for p in removed] == [".metrics.jsonl.abc.tmp.jsonl"]
    assert (tmp_path / "metrics.jsonl").exists()
    claim.release()
    with pytest.raises(AssertionError):
        rundir.clean_stale_temporaries(claim)
