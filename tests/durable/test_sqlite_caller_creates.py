"""SQLite creates commit on their caller's thread, not behind the writer's queue."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from runtime import QueueFullError, SQLiteStore, StoreError
from runtime._queue import QueueLimits
from runtime._stores.base import SnapshotRecord
from tests._support import stall_writer, wait_until
from tests.durable._support.helpers import raw, record, row, save_and_wait


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
    commit = SQLiteStore._commit

    def stuck_commit(self, connection, writes):  # type: ignore[no-untyped-def]
        stuck.set()
        go_on.wait(10)  # the writer is busy elsewhere, its saves queued
        return commit(self, connection, writes)

    monkeypatch.setattr(SQLiteStore, "_commit", stuck_commit)
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


def test_a_create_does_not_wait_for_the_callbacks_of_the_writers_last_commit(
    sqlite_store: SQLiteStore,
) -> None:
    # The writer lets go of the database once its transaction is committed: the callbacks
    # that tell run actors their snapshots are stored run on its thread after that.
    assert sqlite_store.create(record("r"))
    in_callback, go_on = threading.Event(), threading.Event()

    def slow_callback() -> None:
        in_callback.set()
        go_on.wait(10)

    sqlite_store.save([record("r", seq=1, status="running")], on_commit=slow_callback)
    created: list[bool] = []
    try:
        assert in_callback.wait(10)
        creating = threading.Thread(target=lambda: created.append(sqlite_store.create(record("s"))))
        creating.start()
        creating.join(5)
        assert created == [True], "the create waited for the writer's callback"
    finally:
        go_on.set()


def test_saves_of_one_run_in_one_batch_write_its_row_once_the_newest(
    db: Path, sqlite_store: SQLiteStore
) -> None:
    assert sqlite_store.create(record("r"))
    assert sqlite_store.create(record("other"))
    with raw(db) as connection:  # every change of a row, as the database makes it
        connection.execute("CREATE TABLE changes (run_id TEXT, seq INTEGER)")
        connection.execute(
            "CREATE TRIGGER noting AFTER UPDATE ON runs "
            "BEGIN INSERT INTO changes VALUES (new.run_id, new.seq); END"
        )
    stuck, go_on = stall_writer(sqlite_store)  # at the first batch: the rest queue up
    committed = [threading.Event() for _ in range(4)]
    sqlite_store.save([record("other", seq=1, status="running")], on_commit=committed[0].set)
    try:
        assert stuck.wait(10)
        # Three saves of one run, the last of them older than the one before it.
        for seq, event in zip((1, 3, 2), committed[1:], strict=True):
            sqlite_store.save([record("r", seq=seq, status="running")], on_commit=event.set)
    finally:
        go_on.set()
    assert all(event.wait(10) for event in committed), "a save was never reported committed"
    with raw(db) as connection:
        changes = connection.execute("SELECT run_id, seq FROM changes").fetchall()
    assert changes == [("other", 1), ("r", 3)]
    stored = sqlite_store.load("r")
    assert stored is not None and stored.seq == 3


def test_a_held_record_after_one_that_lets_go_of_the_run_in_one_batch_is_not_written(
    sqlite_store: SQLiteStore,
) -> None:
    # Asleep, the run is nobody's: a later record written as this worker's changes nothing.
    assert sqlite_store.create(record("r"))
    asleep = record("r", seq=2, status="waiting")._replace(wake_at=1_800_000_000.0)
    save_and_wait(
        sqlite_store,
        record("r", seq=1, status="running"),
        asleep,
        record("r", seq=3, status="running"),
    )
    assert sqlite_store.load("r") == asleep
    assert not sqlite_store.holds("r")
