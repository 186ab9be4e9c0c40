"""A SQLite store on a network file system says, when it opens, that it must stay on one host.

SQLite's WAL mode keeps an index in shared memory (the ``-shm`` file, mapped by
every process on the file), which NFS or SMB cannot share between hosts: runtimes
on two hosts sharing one file over NFS read torn state and corrupt it, with no
error. Found from ``/proc/self/mountinfo`` by the folder's device: the test
stands a listing in for it that says the test's folder is NFS (no NFS server here).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from structlog.testing import capture_logs

import runtime._stores.sqlite as sqlite_module
from runtime import SQLiteStore


@pytest.fixture
def snapshot_encoding() -> str:
    """No run is made here: one encoding is enough (see ``tests/durable/conftest.py``)."""
    return "as-sized"


def _listing(folder: Path, kind: str, tmp: Path) -> Path:
    """A mountinfo that lists ``folder``'s device as a file system of ``kind``."""
    device = os.stat(folder).st_dev
    numbers = f"{os.major(device)}:{os.minor(device)}"
    lines = [
        "22 27 0:21 / /proc rw,relatime - proc proc rw",
        f"27 1 {numbers} / / rw,relatime - ext4 /dev/vda rw",  # beneath, then mounted over
        f"90 27 {numbers} / {folder} rw,relatime shared:5 - {kind} server:/export rw,vers=4.2",
    ]
    listing = tmp / "mountinfo"
    listing.write_text("\n".join(lines) + "\n")
    return listing


def _said(logs: list[dict[str, object]]) -> list[dict[str, object]]:
    return [entry for entry in logs if entry["event"] == "store_on_network_filesystem"]


@pytest.mark.parametrize("kind", ["nfs4", "cifs", "fuse.sshfs"])
def test_a_store_on_a_network_file_system_warns_once_when_it_opens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    folder = tmp_path / "shared"
    folder.mkdir()
    monkeypatch.setattr(sqlite_module, "_MOUNTINFO", _listing(folder, kind, tmp_path))
    with capture_logs() as logs:
        store = SQLiteStore(folder / "runs.db")
        store.close()
    [said] = _said(logs)
    assert said["log_level"] == "warning"
    assert (said["path"], said["filesystem"]) == (str(folder / "runs.db"), kind)
    assert "every runtime and command on this file must run on this host" in str(said["hint"])
    assert "PostgreSQL" in str(said["hint"])


def test_a_store_on_a_local_file_system_says_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with capture_logs() as logs:
        SQLiteStore(tmp_path / "real.db").close()  # this machine's own listing
    assert _said(logs) == []
    monkeypatch.setattr(sqlite_module, "_MOUNTINFO", _listing(tmp_path, "xfs", tmp_path))
    with capture_logs() as logs:
        SQLiteStore(tmp_path / "runs.db").close()
    assert _said(logs) == []


def test_no_listing_to_read_says_nothing_and_opens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_module, "_MOUNTINFO", tmp_path / "absent")
    with capture_logs() as logs:
        store = SQLiteStore(tmp_path / "runs.db")
        store.close()
    assert _said(logs) == []
