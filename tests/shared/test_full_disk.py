"""A disk that stays full: once it has lasted, waits and starts are told, and nothing is lost.

The runs' writes wait in memory and are tried again while there is no room, as
for a store that refuses writes (``tests/shared/test_refused_writes.py``); once
every try has failed so for ``REFUSAL_PATIENCE`` seconds, a wait on a run that
has not ended raises ``StoreUnavailableError`` with the database's message, a
start is told within ``REFUSED_WAIT`` rather than after the whole 30 s a write
may wait, the log says it once (not at every try), and everything goes on once
there is room again.

SQLite's disk fills through ``PRAGMA max_page_count`` on the store's connections
(``SQLITE_FULL``, as on a full file system; see
``tests/durable/test_store_faults.py``). PostgreSQL's fills for real: the test's
database lives in a tablespace on a small ``tmpfs`` that a file fills, so the
server's own ``could not extend file ... No space left on device`` is what the
store meets. Mounting needs root: elsewhere that test skips, saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import secrets
import shutil
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

import runtime._stores._writer as writer_module
from runtime import (
    Runtime,
    SQLiteStore,
    StoreError,
    StoreUnavailableError,
    create_step,
    create_workflow,
)
from tests._support import Value, small_tmpfs, wait_until
from tests.shared._refusal import Outcomes

WAIT = 60.0
PATIENCE = 0.5
TOLD_WITHIN = 15.0
"""Seconds a wait may take to be told: the patience, and a retry a second at most."""
REFUSED_START_WITHIN = 5.0
"""Seconds a start may take to raise once the full disk outlasted the patience (REFUSED_WAIT)."""
WRITE_TIMEOUT = 120.0
"""A write's own timeout, raised for the test: a start that waited it out shows."""
BIG = 60_000
"""Characters of random text in an output or a start's input: more than the pages free."""


class SQLiteDisk:
    """A SQLite store's disk, filled and freed through its connections' page limit."""

    says = "database or disk is full"

    def __init__(self, path: Path) -> None:
        self.location = str(path)

    def fill(self, rt: Runtime) -> None:
        for connection in _connections(rt):
            pages = connection.execute("PRAGMA page_count").fetchone()[0]
            connection.execute(f"PRAGMA max_page_count = {pages}")

    def free(self, rt: Runtime) -> None:
        for connection in _connections(rt):
            connection.execute("PRAGMA max_page_count = 1073741823")


def _connections(rt: Runtime) -> list[Any]:
    store = rt.store
    assert isinstance(store, SQLiteStore)
    return [c for c in (store._connection, store._caller_connection) if c is not None]


class TmpfsDisk:
    """A PostgreSQL database in a tablespace on a small ``tmpfs``, which a file fills."""

    says = "No space left on device"

    def __init__(self, mount: Path, url: str) -> None:
        self.location = url
        self._filler = mount / "filler"

    def fill(self, _rt: Runtime) -> None:
        chunk = b"\0" * (1 << 20)
        fd = os.open(self._filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            while chunk:
                try:
                    os.write(fd, chunk)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    chunk = chunk[: len(chunk) // 2]  # down to the last bytes free
        finally:
            os.close(fd)

    def free(self, _rt: Runtime) -> None:
        self._filler.unlink()


@contextlib.contextmanager
def tmpfs_database(server: Any, url: str) -> Iterator[TmpfsDisk]:
    """The database of ``url``, moved into a tablespace on a 32 MiB ``tmpfs`` of its own."""
    if server.external is not None:
        pytest.skip("a tablespace on a local tmpfs needs the throwaway cluster, not a named server")
    with small_tmpfs("32m", "a full disk on PostgreSQL") as mount:
        space = f"callboard_full_{os.getpid()}"
        dbname = url.split("///", 1)[1].split("?", 1)[0]
        try:
            (mount / "space").mkdir()
            shutil.chown(mount / "space", "postgres", "postgres")
            with server.admin() as admin:
                admin.execute(f"CREATE TABLESPACE {space} LOCATION '{mount / 'space'}'")
                admin.execute(f'ALTER DATABASE "{dbname}" SET TABLESPACE {space}')
            yield TmpfsDisk(mount, url)
        finally:
            server.drop_database(url)
            with contextlib.suppress(Exception), server.admin() as admin:
                admin.execute(f"DROP TABLESPACE IF EXISTS {space}")


@pytest.fixture(autouse=True)
def _patience(monkeypatch: pytest.MonkeyPatch, _structlog_reset: None) -> None:
    from runtime._stores import postgres as postgres_module
    from runtime._stores import sqlite as sqlite_module

    monkeypatch.setattr(writer_module, "REFUSAL_PATIENCE", PATIENCE, raising=False)
    monkeypatch.setattr(sqlite_module, "CREATE_TIMEOUT", WRITE_TIMEOUT, raising=False)
    monkeypatch.setattr(postgres_module, "CALL_TIMEOUT", WRITE_TIMEOUT, raising=False)


def test_waits_and_starts_on_a_sqlite_disk_that_stays_full_are_told_and_the_run_ends_once_freed(
    tmp_path: Path,
) -> None:
    _told_then_recovered(SQLiteDisk(tmp_path / "runs.db"))


@pytest.mark.postgres
def test_waits_and_starts_on_a_postgresql_disk_that_stays_full_are_told_and_all_goes_on_once_freed(
    postgres_server: Any, postgres_url: str
) -> None:
    with tmpfs_database(postgres_server, postgres_url) as disk:
        _told_then_recovered(disk)


def _told_then_recovered(disk: SQLiteDisk | TmpfsDisk) -> None:
    calls: Counter[str] = Counter()
    filled = threading.Event()

    def first(ctx: Any) -> Value:
        calls["first"] += 1
        if not filled.is_set():
            disk.fill(rt)  # the snapshot holding this output finds no room
            filled.set()
        return Value(value=secrets.token_hex(BIG // 2))

    def then(name: str) -> Any:
        def body(ctx: Any) -> Value:
            calls[name] += 1
            return Value(value=name)

        return create_step(id=name, input_schema=Value, output_schema=Value, execute=body)

    workflow = (
        create_workflow(id="full-disk", input_schema=Value, output_schema=Value)
        .then(create_step(id="first", input_schema=Value, output_schema=Value, execute=first))
        .then(then("second"))
        .then(then("third"))
        .commit()
    )
    with capture_logs() as logs, Runtime(store=disk.location) as rt:
        wf = rt.register(workflow)
        run = wf.create_run()
        run.start_async(input_data={"value": "go"})
        watch = run.watch()
        assert filled.wait(WAIT)
        taken: list[Any] = []
        waits = Outcomes(
            run.wait,  # no timeout: it was for ever
            lambda: asyncio.run(run.wait_async()),
            lambda: taken.extend(watch),
        )
        refused_start = wf.create_run()
        try:
            waits.start()
            assert waits.join(TOLD_WITHIN), "a wait was never told"
            assert len(waits.ended) == 3
            for outcome in waits.ended:
                assert isinstance(outcome, StoreUnavailableError), outcome
                assert disk.says in str(outcome) and run.run_id in str(outcome), outcome
                assert "no room for any write" in str(outcome), outcome
            assert calls["second"] == 0, "the next step ran before its input was recorded"
            # A start is told within a try or two, not after the whole time a write may wait.
            began = time.monotonic()
            with pytest.raises(StoreError, match=disk.says):
                refused_start.start_async(input_data={"value": secrets.token_hex(BIG // 2)})
            assert time.monotonic() - began < REFUSED_START_WITHIN
        finally:
            disk.free(rt)
        wait_until(
            lambda: any(e["event"] == "store_writes_accepted" for e in logs),
            timeout=WAIT,
            what="the store takes writes again",
        )
        result = run.wait(timeout=WAIT)
        assert result.status == "success", result.error
        # The same watch goes on to the run's end, from the last event it took.
        rest = list(watch)
        watch.close()
        assert rest and rest[-1].type == "status" and rest[-1].status == "success"
        seqs = [event.seq for event in taken + rest]
        assert seqs == sorted(set(seqs))
        assert calls == {"first": 1, "second": 1, "third": 1}
        # A start that raised was never recorded, then or since; a new one goes through.
        assert wf.get_workflow_run_execution_result(refused_start.run_id) is None
        assert wf.create_run().start(input_data={"value": "y"}, timeout=WAIT).status == "success"
    events = [e["event"] for e in logs]
    assert events.count("store_disk_full") == 1, events
    assert events.count("store_disk_stays_full") == 1, events
    assert events.count("store_writes_accepted") == 1, events
    for quiet in ("store_write_retrying", "store_write_failed", "store_write_refused"):
        assert quiet not in events, events
