"""In-process helpers for the durability tests: runtimes on a file, raw SQL, waiting."""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from runtime import Runtime, create_step, create_workflow
from tests._support import Value, shout_step, wait_for_no_callboard_threads

BLOCK_LIMIT = 10.0
"""Seconds a gated step waits at most, so that a bug fails instead of hanging."""


class Runtimes:
    """Runtimes a test starts; all stopped at teardown, leaving no callboard thread."""

    def __init__(self) -> None:
        self.started: list[Runtime] = []
        self.gates: list[threading.Event] = []

    def start(self, store: Any, **options: Any) -> Runtime:
        rt = Runtime(store=store, **options)
        self.started.append(rt)
        return rt.start()

    def gate(self) -> threading.Event:
        """An event opened at teardown at the latest, so that no gated step outlives a test."""
        event = threading.Event()
        self.gates.append(event)
        return event

    def close(self) -> None:
        for gate in self.gates:
            gate.set()
        for rt in self.started:
            rt.stop(timeout=5)
        left = wait_for_no_callboard_threads(10)
        assert not left, f"threads left after the runtimes stopped: {[t.name for t in left]}"


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


class Counter:
    """Counts calls by key, from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: dict[str, int] = {}

    def add(self, key: str) -> None:
        with self._lock:
            self.counts[key] = self.counts.get(key, 0) + 1

    def __getitem__(self, key: str) -> int:
        return self.counts.get(key, 0)


def held_workflow(
    counter: Counter,
    gate: threading.Event,
    entered: threading.Event | None = None,
    workflow_id: str = "held",
):
    """``first`` (appends ``-1``), ``hold`` (waits for ``gate``; ``-2``), ``last`` (``-3``).

    Every execution of a step is counted in ``counter``, by step id and by
    ``RUN_ID/STEP_ID``.
    """

    def count(ctx):
        counter.add(ctx.step_id)
        counter.add(f"{ctx.run_id}/{ctx.step_id}")

    def first(ctx):
        count(ctx)
        return Value(value=ctx.input_data.value + "-1")

    def hold(ctx):
        count(ctx)
        if entered is not None:
            entered.set()
        gate.wait(BLOCK_LIMIT)
        return Value(value=ctx.input_data.value + "-2")

    def last(ctx):
        count(ctx)
        return Value(value=ctx.input_data.value + "-3")

    return (
        create_workflow(id=workflow_id, input_schema=Value, output_schema=Value)
        .then(create_step(id="first", input_schema=Value, output_schema=Value, execute=first))
        .then(create_step(id="hold", input_schema=Value, output_schema=Value, execute=hold))
        .then(create_step(id="last", input_schema=Value, output_schema=Value, execute=last))
        .commit()
    )


def quick_workflow(workflow_id: str = "quick"):
    """One step that upper-cases the value."""
    return (
        create_workflow(id=workflow_id, input_schema=Value, output_schema=Value)
        .then(shout_step())
        .commit()
    )
