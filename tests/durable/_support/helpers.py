"""In-process helpers for the durability tests: raw SQL on the store's file, owners, records."""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from runtime import Runtime, SnapshotRecord
from runtime._stores.base import SnapshotStore
from tests._support import quick_workflow


@contextlib.contextmanager
def raw(path: Path, timeout: float = 5.0) -> Iterator[sqlite3.Connection]:
    """A plain sqlite3 connection to the file, in autocommit mode, closed afterwards."""
    connection = sqlite3.connect(path, timeout=timeout, isolation_level=None)
    try:
        yield connection
    finally:
        connection.close()


def drop_deadlines(connection: sqlite3.Connection) -> None:
    """Take a file of today's schema back to before run deadlines (version 7): its column goes."""
    connection.execute("DROP INDEX runs_by_deadline")
    connection.execute("ALTER TABLE runs DROP COLUMN deadline")


def row(path: Path, run_id: str) -> dict[str, Any] | None:
    """A run's row, read through a connection of its own."""
    with raw(path) as connection:
        connection.row_factory = sqlite3.Row
        found = connection.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return None if found is None else dict(found)


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def hand_over(
    path: Path,
    run_ids: list[str],
    owner_id: str,
    *,
    pid: int,
    heartbeat_at: float,
    host: str | None = None,
) -> None:
    """Make ``owner_id`` (a process ``pid`` on ``host``) the owner of these runs."""
    with raw(path) as connection:
        connection.execute(
            "INSERT OR REPLACE INTO owners (owner_id, host, pid, heartbeat_at) VALUES (?, ?, ?, ?)",
            (owner_id, host or socket.gethostname(), pid, heartbeat_at),
        )
        connection.executemany(
            "UPDATE runs SET owner_id = ? WHERE run_id = ?", [(owner_id, r) for r in run_ids]
        )


def record(
    run_id: str,
    seq: int = 0,
    status: str = "pending",
    data: bytes = b"x",
    workflow_id: str = "wf",
) -> SnapshotRecord:
    return SnapshotRecord(
        run_id=run_id,
        workflow_id=workflow_id,
        seq=seq,
        status=status,
        data=data,
        created_at=1_700_000_000.0,
        updated_at=1_700_000_000.0 + seq,
        trace_id="ab" * 16,
    )


def save_and_wait(store: SnapshotStore, *records: SnapshotRecord) -> None:
    committed = threading.Event()
    store.save(records, on_commit=committed.set)
    assert committed.wait(10), "save was never committed"


BARRIER = quick_workflow("barrier")


def barrier(rt: Runtime) -> None:
    """Return once ``rt``'s registry has handled what was told to it before this call.

    Recovery requests go through the registry, as a run's snapshots do, behind
    any request already queued there: once a run started after them has ended,
    whatever recovery would do has been decided and started.
    """
    wf = rt.register(BARRIER)
    assert wf.create_run().start(input_data={"value": "b"}, timeout=10).status == "success"
