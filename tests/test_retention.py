"""Retention: ended runs are pruned in the background; runs that have not ended never are."""

from __future__ import annotations

import contextlib
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from runtime import (
    MemoryStore,
    RetentionPolicy,
    RunDeletedError,
    Runtime,
    SnapshotRecord,
    SnapshotStore,
    SQLiteStore,
    create_step,
    create_workflow,
)
from tests._support import Value, shout_step, wait_until


def record(run_id: str, status: str, updated_at: float, size: int = 10) -> SnapshotRecord:
    return SnapshotRecord(
        run_id=run_id,
        workflow_id="wf",
        seq=0,
        status=status,
        data=b"x" * size,
        created_at=updated_at,
        updated_at=updated_at,
        trace_id="ab" * 16,
    )


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SnapshotStore]:
    opened: SnapshotStore = (
        MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "runs.db")
    )
    try:
        yield opened
    finally:
        opened.close()


STATUSES = ["pending", "running", "waiting", "suspended", "success", "failed", "canceled"]


def fill(store: SnapshotStore) -> None:
    """Every status at three ages: 100, 50 and 10 seconds ago (a later status a moment older)."""
    now = time.time()
    for index, status in enumerate(STATUSES):
        for age in (100, 50, 10):
            assert store.create(record(f"{status}-{age}", status, now - age - index / 1000))


def left(store: SnapshotStore) -> set[str]:
    records, _ = store.list_runs(limit=None)
    return {r.run_id for r in records}


def test_prune_by_age_deletes_only_ended_runs_older_than_the_cut(store: SnapshotStore) -> None:
    fill(store)

    deleted = store.prune(ended_before=time.time() - 30)

    assert deleted == 6
    assert left(store) == {
        f"{status}-{age}"
        for status in STATUSES
        for age in (100, 50, 10)
        if status not in ("success", "failed", "canceled") or age == 10
    }


def test_prune_keeping_n_keeps_the_newest_ended_runs_and_every_unfinished_one(
    store: SnapshotStore,
) -> None:
    fill(store)

    deleted = store.prune(keep=2)

    assert deleted == 7
    unfinished = {f"{status}-{age}" for status in STATUSES[:4] for age in (100, 50, 10)}
    assert left(store) == unfinished | {"success-10", "failed-10"}


def test_prune_with_a_status_deletes_only_that_status(store: SnapshotStore) -> None:
    fill(store)

    assert store.prune(ended_before=time.time(), status="failed") == 3
    assert store.prune(ended_before=time.time(), status="running") == 0

    assert not any(run.startswith("failed") for run in left(store))
    assert sum(run.startswith("success") for run in left(store)) == 3


def test_prune_with_nothing_to_do_deletes_nothing(store: SnapshotStore) -> None:
    fill(store)

    assert store.prune() == 0
    assert store.prune(keep=100) == 0
    assert len(left(store)) == 21


def _open(location: str) -> SnapshotStore:
    if location.startswith("postgresql://"):
        from runtime import PostgresStore

        return PostgresStore(location)
    return SQLiteStore(location)


@pytest.mark.parametrize("how", ["max_age", "keep"])
def test_a_prune_pass_lets_the_runs_saves_commit_between_its_chunks(
    each_shared_store: str, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One pass deleted every run due in one transaction: over a backlog of 100,000 ended
    # runs it held a SQLite store's writer 2.3 s, and each save of a run in progress
    # waited that long (PostgreSQL's prune is a transaction of its own too).
    store = _open(each_shared_store)
    module = sys.modules[type(store).__module__]
    monkeypatch.setattr(module, "PRUNE_CHUNK", 10, raising=False)
    try:
        now = time.time()
        for index in range(35):
            assert store.create(record(f"ended-{index:02}", "success", now - 100 + index))
        assert store.create(record("live", "running", now))
        committed = threading.Event()
        seen: list[bool] = []  # at each prune write: had the save committed?
        submit = store._submit  # type: ignore[attr-defined]

        def noting(kind: str, payload: Any, done: Any) -> Any:
            write = submit(kind, payload, done)
            if kind == "prune":
                seen.append(committed.is_set())
                if len(seen) == 1:  # a run saves while the pass is under way
                    live = record("live", "running", time.time())._replace(seq=1)
                    store.save([live], on_commit=committed.set)
            return write

        monkeypatch.setattr(store, "_submit", noting)
        if how == "max_age":
            deleted = store.prune(ended_before=now - 100 + 30)
        else:
            deleted = store.prune(keep=5)

        assert deleted == 30
        assert True in seen, seen  # a chunk of the pass came after the save's commit
        assert left(store) == {"live", *(f"ended-{index}" for index in range(30, 35))}
    finally:
        store.close()


def test_two_prunes_at_once_keep_the_newest_runs_they_were_told_to_keep(
    each_shared_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each worker of a fleet prunes by the same policy. A pass counted the runs beyond
    # max_runs, then deleted that many, the oldest first: when another pass (another
    # worker's, `callboard runs prune`) had deleted them meanwhile, it deleted as many
    # again, of the runs it was to keep. Two passes with keep=5 left none.
    store = _open(each_shared_store)
    other = _open(each_shared_store)
    try:
        now = time.time()
        for index in range(30):
            assert store.create(record(f"ended-{index:02}", "success", now - 100 + index))
        submit = store._submit  # type: ignore[attr-defined]
        others: list[int] = []

        def racing(kind: str, payload: Any, done: Any) -> Any:
            if kind == "prune" and not others:  # the other pass, whole, before this one's
                others.append(other.prune(keep=5))
            return submit(kind, payload, done)

        monkeypatch.setattr(store, "_submit", racing)
        mine = store.prune(keep=5)

        assert others == [25]
        assert mine == 0
        assert left(store) == {f"ended-{index}" for index in range(25, 30)}
        assert store.prune(keep=0) == 5  # and keep=0 takes every run ended
        assert left(store) == set()
    finally:
        other.close()
        store.close()


def test_a_memory_store_prunes_a_chunk_at_a_time_under_its_lock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every run actor's save takes the lock: a pass held it for its whole look at the
    # runs (150 ms with 100,000 kept, at every pass, with nothing to delete) and delete.
    from runtime._stores import memory

    monkeypatch.setattr(memory, "PRUNE_CHUNK", 10, raising=False)
    store = MemoryStore()
    now = time.time()
    for index in range(35):
        assert store.create(record(f"ended-{index:02}", "success", now - 100 + index))
    lock = store._lock
    held = {"now": 0, "most": 0}

    class Noted:
        def __enter__(self) -> None:
            lock.acquire()
            held["now"] = 0

        def __exit__(self, *_: object) -> None:
            lock.release()

    forget = store._forget_key

    def noted(run_id: str) -> None:
        held["now"] += 1
        held["most"] = max(held["most"], held["now"])
        forget(run_id)

    monkeypatch.setattr(store, "_lock", Noted())
    monkeypatch.setattr(store, "_forget_key", noted)

    assert store.prune(keep=5) == 30
    assert held["most"] == 10
    assert left(store) == {f"ended-{index}" for index in range(30, 35)}


def test_a_runtime_with_max_runs_keeps_that_many_ended_runs(tmp_path: Path) -> None:
    workflow = create_workflow(id="kept", input_schema=Value, output_schema=Value)
    workflow = workflow.then(shout_step()).commit()
    with Runtime(retention=RetentionPolicy(max_runs=3, interval=0.05)) as rt:
        wf = rt.register(workflow)
        runs = [wf.create_run() for _ in range(20)]
        for run in runs:
            run.start(input_data={"value": "v"}, timeout=10)

        wait_until(lambda: wf.list_workflow_runs(limit=None).total == 3, what="pruned to 3")
        kept = {run.run_id for run in wf.list_workflow_runs(limit=None).runs}

    assert kept == {run.run_id for run in runs[-3:]}


def test_an_interval_of_centuries_leaves_the_pruner_waiting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A wait longer than threading's TIMEOUT_MAX raised OverflowError: the pruner thread
    # died at once, its traceback on stderr the only sign.
    died: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: died.append(args.exc_value))
    with Runtime(retention=RetentionPolicy(max_runs=1, interval=1e10)):
        time.sleep(0.2)  # long enough for the thread to reach its wait, and die there
        pruners = [t for t in threading.enumerate() if t.name == "callboard-pruner"]
        assert len(pruners) == 1 and pruners[0].is_alive()
    assert died == []


def test_a_runtime_never_prunes_a_suspended_run_however_old(tmp_path: Path) -> None:
    def wait_for_approval(ctx: Any) -> Value:
        if ctx.resume_data is None:
            ctx.suspend({"why": "approval"})
        return ctx.input_data

    approve = create_step(
        id="approve", input_schema=Value, output_schema=Value, execute=wait_for_approval
    )
    workflow = create_workflow(id="approvals", input_schema=Value, output_schema=Value)
    workflow = workflow.then(approve).commit()
    policy = {"max_age": 0.05, "max_runs": 0, "interval": 0.02}
    with Runtime(store=tmp_path / "runs.db", retention=policy) as rt:
        wf = rt.register(workflow)
        run = wf.create_run()
        assert run.start(input_data={"value": "v"}, timeout=10).status == "suspended"
        time.sleep(0.3)  # many passes, each past max_age

        assert wf.get_workflow_run_execution_result(run.run_id) is not None
        run.resume_async(resume_data={})  # not resume(): the pruner may take it before a wait
        wait_until(
            lambda: wf.get_workflow_run_execution_result(run.run_id) is None,
            what="the ended run pruned",
        )


def test_pruning_gives_the_space_back_to_the_file_system(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    store = SQLiteStore(path)
    now = time.time()
    for index in range(400):
        assert store.create(record(f"r{index}", "success", now, size=4000))
    with contextlib.closing(sqlite3.connect(path)) as reader:
        before = reader.execute("PRAGMA page_count").fetchone()[0]

    assert store.prune(keep=0) == 400
    store.close()  # idle, then a last checkpoint

    with contextlib.closing(sqlite3.connect(path)) as reader:
        after = reader.execute("PRAGMA page_count").fetchone()[0]
    assert after < before / 4, (before, after)


def test_a_run_restarted_while_a_memory_store_prunes_is_kept() -> None:
    # The store looks at its runs outside its lock: a run restarted between that look and
    # its chunk's delete has not ended any more, and stays.
    store = MemoryStore()
    now = time.time()
    for index in range(3):
        assert store.create(record(f"ended-{index}", "failed", now - 100 + index))
    lock = store._lock
    entered = {"count": 0}

    class RestartingFirst:
        def __enter__(self) -> None:
            entered["count"] += 1
            if entered["count"] == 2:  # after the look, before the first chunk's delete
                again = record("ended-0", "running", now)._replace(seq=1, created_at=now - 100)
                assert store.replace(again, 0, reopen=True)
            lock.acquire()

        def __exit__(self, *_: object) -> None:
            lock.release()

    store._lock = RestartingFirst()  # type: ignore[assignment]

    assert store.prune(keep=0) == 2
    assert left(store) == {"ended-0"}


def test_a_sqlite_store_gives_pruned_pages_back_a_few_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The pages of every run a pass pruned went back in one step of the writer: those of
    # 20,000 runs held it (and every save) 0.5 s.
    from runtime._stores import sqlite as sqlite_module

    monkeypatch.setattr(sqlite_module, "RECLAIM_PAGES", 16, raising=False)
    monkeypatch.setattr(sqlite_module, "IDLE_INTERVAL", 0.01)  # one step each idle moment
    path = tmp_path / "runs.db"
    store = SQLiteStore(path)
    now = time.time()
    for index in range(100):
        assert store.create(record(f"r{index}", "success", now, size=4000))
    with contextlib.closing(sqlite3.connect(path)) as reader:
        before = reader.execute("PRAGMA page_count").fetchone()[0]
    left_after: list[bool] = []  # after each step that gave pages back: were some left?
    checkpoint = store._checkpoint

    def noting(idle: bool) -> None:
        giving_back = store._reclaim and idle
        checkpoint(idle)
        if giving_back:
            left_after.append(store._reclaim)

    monkeypatch.setattr(store, "_checkpoint", noting)
    assert store.prune(keep=0) == 100
    wait_until(lambda: left_after and not left_after[-1], what="every page given back")
    store.close()

    assert len(left_after) > 1 and left_after[0], left_after
    with contextlib.closing(sqlite3.connect(path)) as reader:
        after = reader.execute("PRAGMA page_count").fetchone()[0]
    assert after < before / 4, (before, after)


def test_a_sqlite_store_closed_after_a_prune_gives_every_pruned_page_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `callboard runs prune` closes the file at once: what the idle steps left goes then.
    from runtime._stores import sqlite as sqlite_module

    monkeypatch.setattr(sqlite_module, "RECLAIM_PAGES", 16, raising=False)
    monkeypatch.setattr(SQLiteStore, "_checkpoint", lambda self, idle: None)  # never idle
    path = tmp_path / "runs.db"
    store = SQLiteStore(path)
    now = time.time()
    for index in range(100):
        assert store.create(record(f"r{index}", "success", now, size=4000))
    with contextlib.closing(sqlite3.connect(path)) as reader:
        before = reader.execute("PRAGMA page_count").fetchone()[0]

    assert store.prune(keep=0) == 100
    store.close()

    with contextlib.closing(sqlite3.connect(path)) as reader:
        after = reader.execute("PRAGMA page_count").fetchone()[0]
    assert after < before / 4, (before, after)


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({}, "max_age, max_runs or both"),
        ({"max_age": -1}, "greater than 0"),
        ({"max_age": float("inf")}, "finite"),
        ({"max_runs": -1}, "greater than or equal to 0"),
        ({"max_runs": 1, "interval": 0}, "greater than 0"),
        ({"max_runs": 1, "extra": 1}, "Extra inputs"),
    ],
)
def test_a_retention_policy_refuses_what_cannot_be_meant(
    fields: dict[str, Any], error: str
) -> None:
    with pytest.raises(ValidationError, match=error):
        RetentionPolicy(**fields)


def test_a_retention_policy_takes_a_timedelta() -> None:
    assert RetentionPolicy(max_age=timedelta(hours=1)).max_age == 3600.0


def test_a_runtime_takes_a_policy_or_a_mapping_and_refuses_anything_else() -> None:
    Runtime(retention={"max_runs": 10})
    Runtime(retention=RetentionPolicy(max_age=60))
    with pytest.raises(TypeError, match="retention must be"):
        Runtime(retention=10)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_age, max_runs or both"):
        Runtime(retention={})


def test_waiting_on_a_run_whose_record_was_pruned_raises_run_deleted_error() -> None:
    workflow = create_workflow(id="gone", input_schema=Value, output_schema=Value)
    workflow = workflow.then(shout_step()).commit()
    with Runtime(retention={"max_runs": 0, "interval": 0.02}) as rt:
        wf = rt.register(workflow)
        run = wf.create_run()
        run.start_async(input_data={"value": "v"})
        wait_until(
            lambda: wf.get_workflow_run_execution_result(run.run_id) is None,
            what="the run ended and was pruned",
        )

        with pytest.raises(RunDeletedError) as caught:
            run.wait(5)
        with pytest.raises(LookupError):
            run.cancel()

    assert caught.value.run_id == run.run_id


def test_waiting_on_a_deleted_run_raises_run_deleted_error() -> None:
    workflow = create_workflow(id="deleted", input_schema=Value, output_schema=Value)
    workflow = workflow.then(shout_step()).commit()
    with Runtime() as rt:
        wf = rt.register(workflow)
        run = wf.create_run()
        run.start(input_data={"value": "v"}, timeout=10)
        assert wf.delete_workflow_run_by_id(run.run_id)

        with pytest.raises(RunDeletedError, match="no record any more"):
            run.wait(5)


def test_a_memory_store_gives_back_its_table_once_most_runs_are_gone() -> None:
    import sys

    store = MemoryStore()
    now = time.time()
    for index in range(20_000):
        store.create(record(f"r{index}", "success", now))
    peak = sys.getsizeof(store._records)

    for index in range(19_990):
        assert store.delete(f"r{index}")

    assert len(store) == 10
    assert sys.getsizeof(store._records) < peak / 50


def test_a_memory_store_keeps_plain_records_untracked_by_the_garbage_collector() -> None:
    import gc

    store = MemoryStore()
    now = time.time()
    ended = record("ended", "success", now)
    waiting = record("waiting", "waiting", now)._replace(wake_at=now + 60)
    assert store.create(ended) and store.create(waiting)
    gc.collect()

    # A named tuple is tracked for ever; the plain tuple the store keeps is not.
    assert gc.is_tracked(ended)
    assert not gc.is_tracked(store._records["ended"])
    assert not gc.is_tracked(store._records["waiting"])
    # What comes out is the record that went in, of its own type, by every read.
    loaded = store.load("ended")
    assert type(loaded) is SnapshotRecord and loaded == ended
    assert store.list_runs() == ([ended, waiting], 2)
    assert all(type(found) is SnapshotRecord for found in store.list_runs()[0])
    assert store.unfinished() == [waiting]
    assert type(store.unfinished()[0]) is SnapshotRecord
    later = waiting._replace(seq=1, status="success", updated_at=now + 1)
    store.save([later])
    assert store.load("waiting") == later
    assert store.prune(keep=1) == 1  # the older of the two ended runs
    assert store.load("ended") is None
    assert store.delete("waiting")
    assert len(store) == 0


def test_runs_kept_in_memory_add_nothing_to_the_garbage_collectors_work() -> None:
    import gc

    workflow = create_workflow(id="kept", input_schema=Value, output_schema=Value)
    with Runtime() as rt:
        wf = rt.register(workflow.then(shout_step()).commit())
        for _ in range(50):
            wf.create_run().start(input_data={"value": "v"}, timeout=10)
        gc.collect()
        before = len(gc.get_objects())
        for _ in range(600):
            wf.create_run().start(input_data={"value": "v"}, timeout=10)
        gc.collect()
        grown = len(gc.get_objects()) - before
        assert len(rt.store) == 650
    # Each ended run is kept as one record: kept as a tracked object, 600 more runs
    # would add 600 objects to every full collection of the process.
    assert grown < 100, f"{grown} more objects tracked by the garbage collector"


def test_a_sqlite_file_that_gives_no_pages_back_stops_trying_after_a_prune(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A file made before pruned pages were given back (auto_vacuum NONE) keeps them to
    # reuse: the freelist does not shrink, and the writer tried again at every idle
    # moment for as long as the store stayed open, a checkpoint each time.
    from runtime._stores import sqlite as sqlite_module

    monkeypatch.setattr(sqlite_module, "IDLE_INTERVAL", 0.01)  # one step each idle moment
    path = tmp_path / "runs.db"
    SQLiteStore(path).close()
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as connection:
        connection.execute("PRAGMA auto_vacuum = NONE")
        connection.execute("VACUUM")
        assert connection.execute("PRAGMA auto_vacuum").fetchone()[0] == 0
    store = SQLiteStore(path)
    now = time.time()
    for index in range(100):
        assert store.create(record(f"r{index}", "success", now, size=4000))
    tries: list[bool] = []
    checkpoint = store._checkpoint

    def noting(idle: bool) -> None:
        if store._reclaim and idle:
            tries.append(True)
        checkpoint(idle)

    monkeypatch.setattr(store, "_checkpoint", noting)
    assert store.prune(keep=0) == 100
    time.sleep(0.5)  # about 50 idle moments
    store.close()

    assert len(tries) == 1, f"{len(tries)} idle moments tried to give pages back"
