"""The stores and the run lifecycle: the new statuses, and replace(), the compare-and-set.

Most tests run on both stores (runtime/store.py's MemoryStore and runtime/sqlite.py's
SQLiteStore); ownership, orphans and durability are the SQLite store's alone.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

import runtime._stores.sqlite as sqlite_module
from runtime import RunStatus, SQLiteStore, StoreError
from runtime._model import TERMINAL_STATUSES, UNFINISHED_STATUSES
from runtime._stores.base import SnapshotStore
from runtime._stores.memory import MemoryStore
from tests._support import wait_until
from tests.durable._support.helpers import dead_pid, hand_over, raw, record, row, save_and_wait

WORKFLOW = "wf"  # the workflow of helpers.record()

THREADS = 8


@pytest.fixture(autouse=True)
def snapshot_encoding() -> str:
    """These tests run once, not once per encoding (see ``tests/durable/conftest.py``).

    They hand the store records made by hand: no run actor or child process encodes a
    snapshot here.
    """
    return "by-hand"


def stored(store: SnapshotStore, run_id: str) -> tuple[int, str, bytes] | None:
    found = store.load(run_id)
    return None if found is None else (found.seq, found.status, found.data)


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, db: Path) -> Iterator[SnapshotStore]:
    opened: SnapshotStore = MemoryStore() if request.param == "memory" else SQLiteStore(db)
    try:
        yield opened
    finally:
        opened.close()


def suspended_run(store: SnapshotStore, run_id: str = "r") -> None:
    """A run stored at seq 1, suspended: what a resume replaces."""
    assert store.create(record(run_id, seq=0))
    save_and_wait(store, record(run_id, seq=1, status="suspended", data=b"suspended"))


# --- the status sets -------------------------------------------------------------------


def test_the_status_sets_cover_every_run_status_once() -> None:
    assert {"success", "failed", "canceled"} == TERMINAL_STATUSES
    assert {"pending", "running", "waiting"} == UNFINISHED_STATUSES
    assert UNFINISHED_STATUSES | TERMINAL_STATUSES | {"suspended"} == set(RunStatus)


# --- replace: the compare-and-set --------------------------------------------------------


def test_replace_stores_the_record_when_the_stored_seq_is_the_expected_one(
    store: SnapshotStore,
) -> None:
    suspended_run(store)
    assert store.replace(record("r", seq=2, status="running", data=b"resumed"), expected_seq=1)
    assert stored(store, "r") == (2, "running", b"resumed")


def test_replace_with_a_seq_other_than_the_stored_one_changes_nothing(
    store: SnapshotStore,
) -> None:
    suspended_run(store)
    assert not store.replace(record("r", seq=2, status="running", data=b"late"), expected_seq=0)
    assert not store.replace(record("r", seq=3, status="running", data=b"ahead"), expected_seq=2)
    assert stored(store, "r") == (1, "suspended", b"suspended")


@pytest.mark.parametrize("terminal", sorted(TERMINAL_STATUSES))
def test_replace_refuses_a_run_whose_stored_status_is_terminal(
    store: SnapshotStore, terminal: str
) -> None:
    assert store.create(record("r", seq=0))
    save_and_wait(store, record("r", seq=1, status=terminal, data=b"ended"))
    assert not store.replace(record("r", seq=2, status="running", data=b"again"), expected_seq=1)
    assert stored(store, "r") == (1, terminal, b"ended")


def test_replace_refuses_an_unknown_run_and_creates_nothing(store: SnapshotStore) -> None:
    assert not store.replace(record("ghost", seq=1, status="running"), expected_seq=0)
    assert store.load("ghost") is None
    assert store.list_runs()[1] == 0


@pytest.mark.parametrize("seq", [0, 1], ids=["below", "equal"])
def test_replace_refuses_a_record_whose_seq_is_not_above_the_stored_one(
    store: SnapshotStore, seq: int
) -> None:
    suspended_run(store)
    assert not store.replace(record("r", seq=seq, status="running", data=b"old"), expected_seq=1)
    assert stored(store, "r") == (1, "suspended", b"suspended")


def test_of_replaces_racing_with_the_same_expected_seq_exactly_one_wins(
    store: SnapshotStore,
) -> None:
    suspended_run(store)
    start = threading.Barrier(THREADS)
    outcomes: dict[int, bool] = {}
    errors: list[BaseException] = []

    def resume(index: int) -> None:
        try:
            start.wait(10)
            attempt = record("r", seq=2, status="running", data=f"resume-{index}".encode())
            outcomes[index] = store.replace(attempt, expected_seq=1)
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=resume, args=(index,)) for index in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert errors == []
    assert len(outcomes) == THREADS
    winners = [index for index, won in outcomes.items() if won]
    assert len(winners) == 1, outcomes
    assert stored(store, "r") == (2, "running", f"resume-{winners[0]}".encode())


def test_a_replace_sees_a_save_queued_before_it(store: SnapshotStore) -> None:
    assert store.create(record("r", seq=0))
    # Not waited for: the replace must still find it stored, in order.
    store.save([record("r", seq=1, status="suspended", data=b"suspended")])
    assert store.replace(record("r", seq=2, status="running", data=b"resumed"), expected_seq=1)
    assert stored(store, "r") == (2, "running", b"resumed")


def test_saves_after_a_replace_go_on_from_the_replaced_record(store: SnapshotStore) -> None:
    suspended_run(store)
    assert store.replace(record("r", seq=2, status="running", data=b"resumed"), expected_seq=1)
    save_and_wait(store, record("r", seq=2, status="suspended", data=b"stale"))
    assert stored(store, "r") == (2, "running", b"resumed")
    save_and_wait(store, record("r", seq=3, status="success", data=b"done"))
    assert stored(store, "r") == (3, "success", b"done")


# --- canceled is terminal -----------------------------------------------------------------


@pytest.mark.parametrize("later", ["running", "waiting", "suspended", "success", "failed"])
def test_a_canceled_run_is_final_for_save(store: SnapshotStore, later: str) -> None:
    assert store.create(record("r", seq=0))
    save_and_wait(store, record("r", seq=1, status="canceled", data=b"canceled"))
    save_and_wait(store, record("r", seq=2, status=later, data=b"later"))
    assert stored(store, "r") == (1, "canceled", b"canceled")


# --- which runs are unfinished -------------------------------------------------------------


ALL_STATUSES = ["pending", "running", "waiting", "suspended", "success", "failed", "canceled"]


def store_one_run_per_status(store: SnapshotStore) -> None:
    for status in ALL_STATUSES:
        assert store.create(record(status, seq=0))
        if status != "pending":
            save_and_wait(store, record(status, seq=1, status=status))


def test_unfinished_holds_pending_running_and_waiting_runs_only(store: SnapshotStore) -> None:
    store_one_run_per_status(store)
    assert sorted(found.run_id for found in store.unfinished()) == [
        "pending",
        "running",
        "waiting",
    ]


def test_a_reap_hands_back_the_unfinished_runs_of_a_gone_worker_and_no_settled_one(
    db: Path, sqlite_store: SQLiteStore
) -> None:
    store_one_run_per_status(sqlite_store)
    hand_over(db, ALL_STATUSES, "gone-owner", pid=dead_pid(), heartbeat_at=time.time())
    assert sqlite_store.reap() == 3
    assert sorted(found.run_id for found in sqlite_store.queued()) == [
        "pending",
        "running",
        "waiting",
    ]
    assert (row(db, "suspended") or {})["owner_id"] == "gone-owner"  # nobody claims it


def test_a_reap_leaves_the_runs_of_a_live_worker_alone(db: Path, sqlite_store: SQLiteStore) -> None:
    store_one_run_per_status(sqlite_store)
    hand_over(db, ALL_STATUSES, "live-owner", pid=os.getpid(), heartbeat_at=time.time())
    assert sqlite_store.reap() == 0
    assert sqlite_store.queued() == []


def test_a_reap_hands_back_the_runs_of_a_worker_whose_heartbeat_is_older_than_its_lease(
    db: Path, sqlite_store: SQLiteStore
) -> None:
    store_one_run_per_status(sqlite_store)
    hand_over(db, ALL_STATUSES, "stalled", pid=os.getpid(), heartbeat_at=time.time() - 11)
    assert sqlite_store.reap() == 3


def test_a_queued_run_is_claimed_once_and_a_suspended_one_never(
    db: Path, sqlite_store: SQLiteStore
) -> None:
    store_one_run_per_status(sqlite_store)
    hand_over(db, ["waiting", "suspended"], "gone-owner", pid=dead_pid(), heartbeat_at=0.0)
    sqlite_store.reap()
    # Another worker claims: sqlite_store made the runs, and by its own count holds them
    # still (the hand-over went behind its back); a claim of its own would take them for
    # runs lost while it stalled, and hand them back.
    other = SQLiteStore(db)
    try:
        claimed = other.claim([WORKFLOW], 10)
        assert "suspended" not in [found.record.run_id for found in claimed]
        assert "waiting" in [found.record.run_id for found in claimed]
        assert (row(db, "waiting") or {})["owner_id"] == other.owner_id
        assert other.claim([WORKFLOW], 10) == []
        assert (row(db, "suspended") or {})["owner_id"] == "gone-owner"
    finally:
        other.close()


# --- replace on SQLite: durable, owned, locked ------------------------------------------------


def test_a_replace_is_committed_when_it_returns_and_read_by_another_store(
    db: Path, sqlite_store: SQLiteStore
) -> None:
    suspended_run(sqlite_store)
    assert sqlite_store.replace(record("r", seq=2, status="running", data=b"resumed"), 1)
    reader = SQLiteStore(db, readonly=True)
    assert stored(reader, "r") == (2, "running", b"resumed")
    sqlite_store.close()
    reopened = SQLiteStore(db)
    try:
        assert stored(reopened, "r") == (2, "running", b"resumed")
    finally:
        reopened.close()


def test_a_replace_leaves_a_resumed_run_queued_or_held_by_the_replacer(
    db: Path, sqlite_store: SQLiteStore
) -> None:
    suspended_run(sqlite_store)
    other = SQLiteStore(db)
    try:
        assert other.replace(record("r", seq=2, status="running", data=b"resumed"), 1)
        assert (row(db, "r") or {})["owner_id"] is None  # queued, for any worker
        assert not other.holds("r")
        claimed = other.claim([WORKFLOW], 1)
        assert [found.record.run_id for found in claimed] == ["r"]
        assert (row(db, "r") or {})["owner_id"] == other.owner_id
        assert other.holds("r")
    finally:
        other.close()


def test_a_replace_of_a_run_another_worker_holds_fails_and_changes_nothing(
    db: Path, sqlite_store: SQLiteStore
) -> None:
    suspended_run(sqlite_store)
    hand_over(db, ["r"], "previous-owner", pid=os.getpid(), heartbeat_at=time.time())
    other = SQLiteStore(db)
    try:
        assert not other.replace(record("r", seq=2, status="running"), expected_seq=1)
        assert not other.replace(record("r", seq=2, status="running"), expected_seq=0)
    finally:
        other.close()
    assert (row(db, "r") or {})["owner_id"] == "previous-owner"
    assert stored(sqlite_store, "r") == (1, "suspended", b"suspended")


def test_a_read_only_store_refuses_replace(db: Path, sqlite_store: SQLiteStore) -> None:
    suspended_run(sqlite_store)
    reader = SQLiteStore(db, readonly=True)
    with pytest.raises(StoreError, match="read-only"):
        reader.replace(record("r", seq=2, status="running"), expected_seq=1)
    assert stored(sqlite_store, "r") == (1, "suspended", b"suspended")


def test_a_closed_store_refuses_replace(sqlite_store: SQLiteStore) -> None:
    suspended_run(sqlite_store)
    sqlite_store.close()
    with pytest.raises(StoreError, match="closed"):
        sqlite_store.replace(record("r", seq=2, status="running"), expected_seq=1)
    assert stored(sqlite_store, "r") == (1, "suspended", b"suspended")


def test_a_replace_waits_for_another_writers_lock_and_commits_once_it_lets_go(
    db: Path, quick_lock_store: SQLiteStore
) -> None:
    sqlite_store = quick_lock_store
    suspended_run(sqlite_store)
    outcome: list[bool] = []
    with capture_logs() as logs, raw(db) as other_writer:
        other_writer.execute("BEGIN IMMEDIATE")
        thread = threading.Thread(
            target=lambda: outcome.append(
                sqlite_store.replace(record("r", seq=2, status="running", data=b"resumed"), 1)
            )
        )
        thread.start()
        wait_until(
            lambda: any(event["event"] == "store_locked" for event in logs),
            what="the store retried the locked database",
        )
        assert outcome == [], "replace returned before it could commit"
        other_writer.execute("COMMIT")
        thread.join(10)
    assert outcome == [True]
    assert stored(sqlite_store, "r") == (2, "running", b"resumed")


def test_a_replace_that_outlasts_the_timeout_raises_and_never_happens(
    db: Path, sqlite_store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    suspended_run(sqlite_store)
    monkeypatch.setattr(sqlite_module, "LOCK_TIMEOUT", 0.05)
    monkeypatch.setattr(sqlite_module, "CREATE_TIMEOUT", 0.3)
    with raw(db) as other_writer:
        other_writer.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreError, match="locked") as caught:
            sqlite_store.replace(record("r", seq=2, status="running", data=b"abandoned"), 1)
        other_writer.execute("COMMIT")
    assert "'r'" in str(caught.value) and "not stored" in str(caught.value)
    # A write committed after the lock is gone comes behind the abandoned replace.
    assert sqlite_store.create(record("after"))
    assert stored(sqlite_store, "r") == (1, "suspended", b"suspended")
    # Told it did not happen, the caller may try again.
    assert sqlite_store.replace(record("r", seq=2, status="running", data=b"again"), 1)
    assert stored(sqlite_store, "r") == (2, "running", b"again")
