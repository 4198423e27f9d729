from __future__ import annotations

import os
import pickle

import pytest
import torch

from pyrovae.errors import CheckpointError
from pyrovae.files import atomic_write_bytes
from pyrovae.training.checkpoint import load_checkpoint, save_checkpoint


class _Payload:
    """An object whose unpickling would run code."""

    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_round_trip_is_exact(tmp_path):
    state = {"epoch": 3, "model": {"w": torch.randn(4, 5)}, "history": [{"loss": 1.5}]}
    save_checkpoint(tmp_path / "c.pt", state)
    loaded = load_checkpoint(tmp_path / "c.pt")
    assert loaded["epoch"] == 3
    assert torch.equal(loaded["model"]["w"], state["model"]["w"])
    assert loaded["history"] == [{"loss": 1.5}]
    assert sorted(os.listdir(tmp_path)) == ["c.pt"]  # no temporary file left behind


def test_atomic_write_replaces_whole_file(tmp_path):
    path = tmp_path / "f"
    atomic_write_bytes(path, b"old")
    atomic_write_bytes(path, b"new contents")
    assert path.read_bytes() == b"new contents"


def test_truncated_file(tmp_path):
    save_checkpoint(tmp_path / "c.pt", {"model": {"w": torch.randn(100, 100)}})
    data = (tmp_path / "c.pt").read_bytes()
    (tmp_path / "c.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cannot load checkpoint") as info:
        load_checkpoint(tmp_path / "c.pt")
    assert "\n" not in str(info.value)
    assert "it is truncated, corrupted or not a torch checkpoint (" in str(info.value)


def test_garbage_and_missing_files(tmp_path):
    (tmp_path / "c.pt").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "nothing.pt")


def test_pickle_payload_is_refused_not_run(tmp_path):
    torch.save({"format": "pyrovae-checkpoint", "version": 1, "x": _Payload()}, tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match="refused for safety"):
        load_checkpoint(tmp_path / "c.pt")
    (tmp_path / "p.pt").write_bytes(pickle.dumps(_Payload()))
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "p.pt")


def test_foreign_torch_file(tmp_path):
    torch.save({"weights": torch.ones(2)}, tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match="not a pyrovae checkpoint"):
        load_checkpoint(tmp_path / "c.pt")


def test_files_get_ordinary_permissions(tmp_path):
    mask = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "f", b"x")
    finally:
        os.umask(mask)
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o644


def test_old_checkpoint_version_is_named(tmp_path):
    torch.save({"format": "pyrovae-checkpoint", "version": 1}, tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match="version 1"):
        load_checkpoint(tmp_path / "c.pt")


def test_a_checkpoint_that_cannot_be_read_for_permissions_says_so(tmp_path, monkeypatch):
    # It was called "truncated, corrupted or not a torch checkpoint".
    save_checkpoint(tmp_path / "c.pt", {"model": {}})

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "c.pt"))

    monkeypatch.setattr(torch, "load", denied)
    with pytest.raises(CheckpointError, match=r"c.pt: permission denied$"):
        load_checkpoint(tmp_path / "c.pt")
