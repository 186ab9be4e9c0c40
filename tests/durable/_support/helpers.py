"""In-process helpers for the durability tests: raw SQL on the store's file, owners."""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def raw(path: Path, timeout: float = 5.0) -> Iterator[sqlite3.Connection]:
    """A plain sqlite3 connection to the file, in autocommit mode, closed afterwards."""
    connection = sqlite3.connect(path, timeout=timeout, isolation_level=None)
    try:
        yield connection
    finally:
        connection.close()


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
