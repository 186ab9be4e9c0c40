"""SQLite under faults: a failed commit is never acknowledged, and one bad record fails alone.

A full disk is made real with ``PRAGMA max_page_count`` on the store's writer
connection: SQLite then fails every transaction that needs a new page with
``SQLITE_FULL``, exactly as it does when the file system is full, and lifting
the limit is the space coming back.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from structlog.testing import capture_logs

from runtime import (
    Runtime,
    SnapshotRecord,
    SQLiteStore,
    StoreError,
    StoreUnavailableError,
    create_step,
    create_workflow,
)
from runtime._snapshot import decode

WAIT = 10.0


class Text(BaseModel):
    value: str


def wait_until(predicate: Callable[[], Any], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"not reached within {timeout} s: {what}")
        time.sleep(0.01)


def record(run_id: str, seq: int, data: bytes = b"x", **changes: Any) -> SnapshotRecord:
    fields: dict[str, Any] = {
        "run_id": run_id,
        "workflow_id": "wf",
        "seq": seq,
        "status": "running",
        "data": data,
        "created_at": 1.0,
        "updated_at": 1.0 + seq,
        "trace_id": "ab" * 16,
    }
    fields.update(changes)
    return SnapshotRecord(**fields)


class Disk:
    """The store's file system, filled and freed through SQLite's page limit."""

    def __init__(self, store: SQLiteStore) -> None:
        # The writer's connection, and the one creates commit on from their callers' threads.
        self._connections: list[sqlite3.Connection] = [store._connection]
        if store._caller_connection is not None:
            self._connections.append(store._caller_connection)

    def fill(self) -> None:
        for connection in self._connections:
            pages = connection.execute("PRAGMA page_count").fetchone()[0]
            connection.execute(f"PRAGMA max_page_count = {pages}")

    def free(self) -> None:
        for connection in self._connections:
            connection.execute("PRAGMA max_page_count = 1073741823")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    opened = SQLiteStore(tmp_path / "runs.db")
    try:
        yield opened
    finally:
        Disk(opened).free()
        opened.close()


def test_a_save_that_cannot_commit_on_a_full_disk_is_not_acknowledged_until_it_does(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert store.create(record("r", 0))
    disk = Disk(store)
    committed, failed = threading.Event(), []
    full_tries: list[float] = []
    transaction = store._transaction

    def counted(*args: Any) -> Any:
        try:
            return transaction(*args)
        except sqlite3.OperationalError as exc:
            if "full" in str(exc):
                full_tries.append(time.monotonic())
            raise

    monkeypatch.setattr(store, "_transaction", counted)
    disk.fill()

    with capture_logs() as logs:
        store.save([record("r", 1, data=b"y" * 200_000)], committed.set, failed.append)
        wait_until(lambda: len(full_tries) >= 3, "the writer retried the full disk")

        assert not committed.is_set(), "a save the disk refused was acknowledged"
        assert failed == []
        stored = store.load("r")
        assert stored is not None and stored.seq == 0
        disk.free()
        assert committed.wait(WAIT), "the save never went through once space returned"

    stored = store.load("r")
    assert stored is not None and stored.seq == 1 and failed == []
    # Said when it began and when it ended, not at every try.
    events = [e["event"] for e in logs]
    assert events.count("store_disk_full") == 1, events
    assert events.count("store_writes_accepted") == 1, events
    assert "store_write_retrying" not in events, events


def test_a_create_on_a_full_disk_returns_once_space_returns(store: SQLiteStore) -> None:
    disk = Disk(store)
    disk.fill()
    outcome: list[bool] = []
    creating = threading.Thread(
        target=lambda: outcome.append(store.create(record("big", 0, data=b"z" * 200_000)))
    )
    creating.start()
    time.sleep(0.3)

    assert creating.is_alive(), "create returned before its run was committed"
    assert store.load("big") is None
    disk.free()
    creating.join(WAIT)
    assert outcome == [True]
    assert store.load("big") is not None


def test_a_create_given_up_on_a_full_disk_says_the_disk_is_full_not_that_it_was_locked(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An operator's `runs prune` on a full disk was told the store "stayed locked for 30 s".
    monkeypatch.setattr("runtime._stores.sqlite.CREATE_TIMEOUT", 0.3)
    disk = Disk(store)
    disk.fill()

    with pytest.raises(StoreUnavailableError) as caught:
        store.create(record("big", 0, data=b"z" * 200_000))

    message = str(caught.value)
    assert "database or disk is full" in message, message
    assert "locked" not in message, message
    assert store.load("big") is None


def test_a_start_on_a_file_locked_for_long_is_told_in_seconds_not_after_the_whole_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another process holds the write lock (a backup, a stuck writer): each start waited
    # the whole 30 s. Once every write has failed for REFUSAL_PATIENCE, a start waits
    # REFUSED_WAIT (2 s) at most, saying for how long writes have failed.
    import runtime._stores._writer as writer_module
    import runtime._stores.sqlite as sqlite_module

    monkeypatch.setattr(writer_module, "REFUSAL_PATIENCE", 0.5)
    monkeypatch.setattr(sqlite_module, "CREATE_TIMEOUT", 60.0)
    monkeypatch.setattr(sqlite_module, "LOCK_TIMEOUT", 0.2)
    store = SQLiteStore(tmp_path / "runs.db")
    try:
        assert store.create(record("r", 0))
        saved = threading.Event()
        other = sqlite3.connect(tmp_path / "runs.db", isolation_level=None, timeout=5)
        other.execute("BEGIN IMMEDIATE")
        try:
            store.save([record("r", 1)], saved.set)
            time.sleep(1.0)  # the save tried, and the file stayed locked, past the patience
            with pytest.raises(StoreUnavailableError) as raised:
                store.create(record("late", 0))
            told = str(raised.value)
            assert "stayed locked for 2 s (every write has failed for" in told, told
        finally:
            other.execute("COMMIT")
            other.close()
        assert saved.wait(WAIT), "the save never went through once the lock was let go"
        assert store.load("late") is None
        assert store.create(record("after", 0))
    finally:
        store.close()


def test_one_record_the_database_refuses_fails_alone_and_the_rest_of_its_batch_commits(
    store: SQLiteStore, tmp_path: Path
) -> None:
    for run_id in ("a", "b", "bad"):
        assert store.create(record(run_id, 0))
    outcomes: Counter[str] = Counter()
    errors: list[BaseException] = []
    done = threading.Event()

    def finished(name: str) -> Callable[[], None]:
        def on_commit() -> None:
            outcomes[name] += 1
            if sum(outcomes.values()) == 2:
                done.set()

        return on_commit

    # Hold the database so that the three writes queue up and go in one batch.
    other = sqlite3.connect(tmp_path / "runs.db", isolation_level=None, timeout=5)
    other.execute("BEGIN IMMEDIATE")
    store.save([record("a", 1)], finished("a"))
    store.save([record("bad", 1, status=object())], finished("bad"), errors.append)
    store.save([record("b", 1)], finished("b"))
    created: list[bool] = []
    creating = threading.Thread(target=lambda: created.append(store.create(record("c", 0))))
    creating.start()
    time.sleep(0.2)
    other.execute("COMMIT")
    other.close()

    assert done.wait(WAIT)
    creating.join(WAIT)
    assert outcomes == {"a": 1, "b": 1}
    assert len(errors) == 1 and "cannot write" in str(errors[0])
    assert created == [True]
    assert [store.load(run_id).seq for run_id in ("a", "b", "bad")] == [1, 1, 0]  # type: ignore[union-attr]


class Steps:
    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.second_started = threading.Event()

    def step(self, name: str) -> Any:
        def body(ctx: Any) -> Text:
            self.calls[name] += 1
            if name == "second":
                self.second_started.set()
            return Text(value=ctx.input_data.value + "-" + name + "-" + "p" * 50_000)

        return create_step(id=name, input_schema=Text, output_schema=Text, execute=body)


def test_a_run_holds_before_its_next_step_while_the_disk_is_full_and_goes_on_once_freed(
    tmp_path: Path,
) -> None:
    steps = Steps()
    first_done = threading.Event()

    def first(ctx: Any) -> Text:
        steps.calls["first"] += 1
        disk.fill()  # the snapshot holding this step's output cannot be committed
        first_done.set()
        return Text(value="one" + "q" * 100_000)

    workflow = (
        create_workflow(id="full-disk", input_schema=Text, output_schema=Text)
        .then(create_step(id="first", input_schema=Text, output_schema=Text, execute=first))
        .then(steps.step("second"))
        .then(steps.step("third"))
        .commit()
    )
    with Runtime(store=tmp_path / "runs.db") as rt:
        assert isinstance(rt.store, SQLiteStore)
        disk = Disk(rt.store)
        wf = rt.register(workflow)
        run = wf.create_run()
        run.start_async(input_data={"value": "go"})
        assert first_done.wait(WAIT)

        assert not steps.second_started.wait(0.5), "the next step started before a commit"
        stored = rt.store.load(run.run_id)
        assert stored is not None
        assert decode(stored.data, run.run_id)["steps"].get("first", {}).get("status") != (
            "success"
        )
        disk.free()
        result = run.wait(WAIT)

    assert result.status == "success"
    assert steps.calls == {"first": 1, "second": 1, "third": 1}


def test_a_snapshot_the_database_refuses_fails_its_run_and_no_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    row = SQLiteStore._row

    def refuse_one_runs_progress(
        self: SQLiteStore, r: SnapshotRecord, *rest: Any
    ) -> tuple[Any, ...]:
        values = row(self, r, *rest)
        if r.run_id == "poisoned" and r.status == "running" and r.seq >= 2:
            return (*values[:-1], object())  # a value sqlite3 cannot bind: refused for good
        return values

    monkeypatch.setattr(SQLiteStore, "_row", refuse_one_runs_progress)
    steps = Steps()
    workflow = (
        create_workflow(id="refused", input_schema=Text, output_schema=Text)
        .then(steps.step("first"))
        .then(steps.step("second"))
        .commit()
    )
    with capture_logs() as logs, Runtime(store=tmp_path / "runs.db") as rt:
        wf = rt.register(workflow)
        poisoned = wf.create_run("poisoned")
        poisoned.start_async(input_data={"value": "p"})
        others = [wf.create_run() for _ in range(5)]
        for run in others:
            run.start_async(input_data={"value": "o"})

        result = poisoned.wait(WAIT)
        other_results = [run.wait(WAIT) for run in others]

    assert result.status == "failed"
    assert result.error is not None and result.error.name == "StoreError"
    assert [r.status for r in other_results] == ["success"] * 5
    assert any(e["event"] == "snapshot_refused" for e in logs)


def grow(ctx: Any) -> Text:
    return Text(value=ctx.input_data.value * 1_000)


def test_a_value_larger_than_sqlite_stores_fails_its_start_or_its_run_saying_so(
    tmp_path: Path,
) -> None:
    # SQLite refuses a string or blob over its length limit (1 GB unless built otherwise)
    # with SQLITE_TOOBIG for good; the limit is lowered here, as the disk is filled above.
    store = SQLiteStore(tmp_path / "runs.db")
    for connection in (store._connection, store._caller_connection):
        if connection is not None:
            connection.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 100_000)
    step = create_step(id="grow", input_schema=Text, output_schema=Text, execute=grow)
    workflow = create_workflow(id="big", input_schema=Text, output_schema=Text).then(step).commit()
    with capture_logs() as logs, Runtime(store=store) as rt:
        wf = rt.register(workflow)
        too_big = wf.create_run()
        with pytest.raises(StoreError) as refused:
            too_big.start_async(input_data={"value": "x" * 200_000})
        message = str(refused.value)
        assert f"run {too_big.run_id!r} holds a value larger than SQLite stores" in message
        assert "100,000 bytes" in message
        assert wf.get_workflow_run_execution_result(too_big.run_id) is None  # nothing recorded

        grows = wf.create_run()  # its input fits, its step's output (1,000 times it) does not
        grows.start_async(input_data={"value": "y" * 1_000})
        others = [wf.create_run() for _ in range(3)]
        for run in others:
            run.start_async(input_data={"value": "z"})
        result = grows.wait(WAIT)
        other_results = [run.wait(WAIT) for run in others]
        too_big.start_async(input_data={"value": "fits"})  # the refused start left nothing
        again = too_big.wait(WAIT)

    assert result.status == "failed"
    assert result.error is not None and result.error.name == "StoreError"
    assert f"run {grows.run_id!r} holds a value larger than SQLite stores" in result.error.message
    assert [r.status for r in other_results] == ["success"] * 3
    assert again.status == "success" and again.result == {"value": "fits" * 1_000}
    assert any(e["event"] == "store_write_failed" for e in logs)
