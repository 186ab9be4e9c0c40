"""SQLite creates commit on their caller's thread, not behind the writer's queue."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from runtime import QueueFullError, SQLiteStore, StoreError
from runtime._queue import QueueLimits
from runtime._stores.base import SnapshotRecord
from tests._support import wait_until
from tests.durable._support.helpers import raw, record, row


@pytest.fixture(autouse=True)
def snapshot_encoding() -> str:
    """These tests run once, not once per encoding (see ``tests/durable/conftest.py``).

    They hand the store records made by hand: no run actor or child process encodes a
    snapshot here.
    """
    return "by-hand"


def inserting_threads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the threads that run each INSERT of new runs, from now on."""
    names: list[str] = []
    insert = SQLiteStore._insert

    def noting_insert(self, connection, creates):  # type: ignore[no-untyped-def]
        if creates:  # every transaction of the writer inserts its creates, if any
            names.append(threading.current_thread().name)
        return insert(self, connection, creates)

    insert_one = SQLiteStore._insert_one

    def noting_insert_one(self, connection, record, hold):  # type: ignore[no-untyped-def]
        names.append(threading.current_thread().name)  # a create in no queue, on its own
        return insert_one(self, connection, record, hold)

    monkeypatch.setattr(SQLiteStore, "_insert", noting_insert)
    monkeypatch.setattr(SQLiteStore, "_insert_one", noting_insert_one)
    return names


def test_a_create_commits_on_its_callers_thread(
    db: Path, sqlite_store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = inserting_threads(monkeypatch)
    hints: list[tuple[str, str]] = []
    sqlite_store.set_hint(lambda kind, run_id: hints.append((kind, run_id)))
    assert sqlite_store.create(record("held"))
    assert sqlite_store.create(record("queued"), hold=False)
    assert not sqlite_store.create(record("held", data=b"again"))
    assert names == [threading.current_thread().name] * 3
    # Committed, and the holds and hints are those of a create through the writer.
    with raw(db) as other_process:
        owners = dict(other_process.execute("SELECT run_id, owner_id FROM runs").fetchall())
    assert owners == {"held": sqlite_store.owner_id, "queued": None}
    assert sqlite_store.holds("held") and not sqlite_store.holds("queued")
    assert hints == [("queued", "queued")]
    stored = sqlite_store.load("held")
    assert stored is not None and stored.data == b"x"


def test_a_create_does_not_wait_for_the_writes_queued_at_the_writer(
    sqlite_store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert sqlite_store.create(record("r"))
    stuck, go_on = threading.Event(), threading.Event()
    locked_commit = SQLiteStore._locked_commit

    def stuck_commit(self, connection, writes):  # type: ignore[no-untyped-def]
        stuck.set()
        go_on.wait(10)  # the writer is busy elsewhere, its saves queued
        return locked_commit(self, connection, writes)

    monkeypatch.setattr(SQLiteStore, "_locked_commit", stuck_commit)
    saved = threading.Event()
    sqlite_store.save([record("r", seq=1, status="running")], on_commit=saved.set)
    try:
        assert stuck.wait(10)
        assert sqlite_store.create(record("s"))  # without the writer
        assert sqlite_store.load("s") is not None
        assert not saved.is_set()
    finally:
        go_on.set()
    assert saved.wait(10)


def test_a_create_goes_through_the_writer_while_another_process_holds_the_lock(
    db: Path, quick_lock_store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    sqlite_store = quick_lock_store
    names = inserting_threads(monkeypatch)
    outcome: list[bool] = []
    with capture_logs() as logs, raw(db) as other_writer:
        other_writer.execute("BEGIN IMMEDIATE")
        creating = threading.Thread(target=lambda: outcome.append(sqlite_store.create(record("r"))))
        creating.start()
        wait_until(
            lambda: any(event["event"] == "store_locked" for event in logs),
            what="the writer retried the locked database",
        )
        assert outcome == [], "create returned before its run was committed"
        other_writer.execute("COMMIT")
        creating.join(10)
    assert outcome == [True]
    assert row(db, "r") is not None
    assert names[-1] == "callboard-sqlite-writer"


def test_a_full_queue_refuses_a_create_on_its_callers_thread(
    sqlite_store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    names: list[str] = []
    refuse_full = SQLiteStore._refuse_full

    def noting_refuse_full(self, connection, creates, outcome):  # type: ignore[no-untyped-def]
        if creates:
            names.append(threading.current_thread().name)
        return refuse_full(self, connection, creates, outcome)

    monkeypatch.setattr(SQLiteStore, "_refuse_full", noting_refuse_full)
    sqlite_store.define_queue(QueueLimits("q", max_queued=1))

    def queued(run_id: str) -> SnapshotRecord:
        return record(run_id)._replace(queue="q")

    assert sqlite_store.create(queued("a"), hold=False)
    with pytest.raises(QueueFullError):
        sqlite_store.create(queued("b"), hold=False)
    assert sqlite_store.load("b") is None
    assert names == [threading.current_thread().name] * 2


def test_a_create_after_close_is_refused(sqlite_store: SQLiteStore) -> None:
    sqlite_store.close()
    with pytest.raises(StoreError, match="closed"):
        sqlite_store.create(record("late"))
