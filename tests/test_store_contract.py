"""The promises of every snapshot store, held by memory, SQLite and PostgreSQL alike."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime._stores.base import SnapshotRecord, SnapshotStore
from runtime._stores.memory import MemoryStore
from runtime._stores.open import open_store
from runtime._stores.sqlite import SQLiteStore

STORES = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def rec(
    run_id: str,
    seq: int = 0,
    status: str = "pending",
    *,
    workflow_id: str = "wf",
    created_at: float = 1_700_000_000.0,
    updated_at: float | None = None,
    wake_at: float | None = None,
    data: bytes | None = None,
) -> SnapshotRecord:
    """A record whose bytes name its run and seq; ``wake_at`` for a sleeping run."""
    return SnapshotRecord(
        run_id=run_id,
        workflow_id=workflow_id,
        seq=seq,
        status=status,
        data=data if data is not None else f"{run_id}:{seq}".encode(),
        created_at=created_at,
        updated_at=created_at + seq if updated_at is None else updated_at,
        trace_id="ab" * 16,
        wake_at=wake_at,
    )


def save_and_wait(store: SnapshotStore, *records: SnapshotRecord) -> None:
    committed = threading.Event()
    errors: list[BaseException] = []
    store.save(records, on_commit=committed.set, on_error=errors.append)
    assert committed.wait(10), f"save was never committed: {errors}"


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SnapshotStore]:
    """A fresh store of each kind, closed afterwards."""
    kind = request.param
    if kind == "memory":
        opened: SnapshotStore = MemoryStore()
    elif kind == "sqlite":
        opened = SQLiteStore(tmp_path / "runs.db")
    else:
        opened = open_store(request.getfixturevalue("postgres_url"))
    try:
        yield opened
    finally:
        opened.close()


# --- create ---------------------------------------------------------------------------


def test_create_records_a_run_and_refuses_an_id_that_is_taken(store: SnapshotStore) -> None:
    assert store.create(rec("r1"))
    assert not store.create(rec("r1", data=b"another"))
    assert store.load("r1") == rec("r1")


def test_a_created_run_is_readable_at_once_from_another_thread(store: SnapshotStore) -> None:
    seen: list[SnapshotRecord | None] = []
    for n in range(20):
        assert store.create(rec(f"r{n}"))
        reader = threading.Thread(target=lambda n=n: seen.append(store.load(f"r{n}")))
        reader.start()
        reader.join()
    assert all(found is not None for found in seen)


def test_load_of_an_unknown_run_is_none(store: SnapshotStore) -> None:
    assert store.load("nobody") is None


# --- save -----------------------------------------------------------------------------


def test_save_keeps_a_newer_record_and_ignores_an_older_one(store: SnapshotStore) -> None:
    store.create(rec("r1"))
    save_and_wait(store, rec("r1", 2, "running"))
    save_and_wait(store, rec("r1", 1, "running"))
    save_and_wait(store, rec("r1", 2, "running", data=b"same seq"))
    assert store.load("r1") == rec("r1", 2, "running")


def test_a_run_saved_twice_in_one_call_ends_at_the_newer_record(store: SnapshotStore) -> None:
    store.create(rec("a"))
    store.create(rec("b"))
    save_and_wait(store, rec("a", 1, "running"), rec("a", 2, "running"), rec("b", 3, "running"))
    save_and_wait(store, rec("b", 5, "running"), rec("b", 4, "running"))
    assert store.load("a") == rec("a", 2, "running")
    assert store.load("b") == rec("b", 5, "running")


@pytest.mark.parametrize("terminal", ["success", "failed", "canceled"])
def test_a_terminal_status_is_final(store: SnapshotStore, terminal: str) -> None:
    store.create(rec("r1"))
    save_and_wait(store, rec("r1", 1, terminal))
    save_and_wait(store, rec("r1", 2, "running"))
    assert store.load("r1") == rec("r1", 1, terminal)
    assert not store.replace(rec("r1", 3, "running"), 1)
    assert store.load("r1") == rec("r1", 1, terminal)


def test_a_record_after_a_terminal_one_in_the_same_call_changes_nothing(
    store: SnapshotStore,
) -> None:
    store.create(rec("r1"))
    save_and_wait(store, rec("r1", 1, "failed"), rec("r1", 2, "running"))
    assert store.load("r1") == rec("r1", 1, "failed")


def test_saves_from_several_threads_are_all_stored(store: SnapshotStore) -> None:
    threads, runs, steps = 6, 20, 5
    for t in range(threads):
        for r in range(runs):
            assert store.create(rec(f"t{t}-r{r}"))
    errors: list[BaseException] = []
    pending = threading.Semaphore(0)

    def drive(t: int) -> None:
        for seq in range(1, steps + 1):
            for r in range(runs):
                status = "success" if seq == steps else "running"
                store.save(
                    [rec(f"t{t}-r{r}", seq, status)],
                    on_commit=pending.release,
                    on_error=errors.append,
                )

    workers = [threading.Thread(target=drive, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    for _ in range(threads * runs * steps):
        assert pending.acquire(timeout=10), "a save was never committed"
    assert not errors
    for t in range(threads):
        for r in range(runs):
            assert store.load(f"t{t}-r{r}") == rec(f"t{t}-r{r}", steps, "success")


def test_a_big_record_round_trips(store: SnapshotStore) -> None:
    big = bytes(range(256)) * (16 * 1024)  # 4 MiB
    store.create(rec("big", data=big))
    save_and_wait(store, rec("big", 1, "running", data=big[::-1]))
    found = store.load("big")
    assert found is not None and found.data == big[::-1]


# --- replace --------------------------------------------------------------------------


def test_replace_is_a_compare_and_set_on_seq(store: SnapshotStore) -> None:
    store.create(rec("r1"))
    save_and_wait(store, rec("r1", 3, "suspended"))
    assert not store.replace(rec("r1", 4, "running"), 2)  # stale expectation
    assert not store.replace(rec("r1", 3, "running"), 3)  # not newer
    assert not store.replace(rec("nobody", 1, "running"), 0)  # unknown
    assert store.load("r1") == rec("r1", 3, "suspended")
    assert store.replace(rec("r1", 4, "running"), 3)
    assert store.load("r1") == rec("r1", 4, "running")
    assert not store.replace(rec("r1", 5, "canceled"), 3)


def test_of_replaces_that_race_exactly_one_wins(store: SnapshotStore) -> None:
    store.create(rec("r1"))
    save_and_wait(store, rec("r1", 1, "suspended"))
    start = threading.Barrier(8)
    wins: list[int] = []

    def resume(n: int) -> None:
        start.wait()
        if store.replace(rec("r1", 2, "running", data=f"resume {n}".encode()), 1):
            wins.append(n)

    racers = [threading.Thread(target=resume, args=(n,)) for n in range(8)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join()
    assert len(wins) == 1
    found = store.load("r1")
    assert found is not None and found.data == f"resume {wins[0]}".encode()


# --- queries --------------------------------------------------------------------------


def test_list_runs_is_newest_first_with_filters_paging_and_a_total(store: SnapshotStore) -> None:
    for n in range(6):
        store.create(
            rec(f"r{n}", workflow_id="even" if n % 2 == 0 else "odd", created_at=1000.0 + n)
        )
    save_and_wait(store, rec("r4", 1, "success", workflow_id="even", created_at=1004.0))

    def ids(found: tuple[list[SnapshotRecord], int]) -> tuple[list[str], int]:
        return [record.run_id for record in found[0]], found[1]

    assert ids(store.list_runs()) == (["r5", "r4", "r3", "r2", "r1", "r0"], 6)
    assert ids(store.list_runs(limit=2, offset=1)) == (["r4", "r3"], 6)
    assert ids(store.list_runs(limit=None, offset=4)) == (["r1", "r0"], 6)
    assert ids(store.list_runs(workflow_id="even")) == (["r4", "r2", "r0"], 3)
    assert ids(store.list_runs(status="success")) == (["r4"], 1)
    assert ids(store.list_runs(from_date=1002.0, to_date=1004.0)) == (["r4", "r3", "r2"], 3)
    assert ids(store.list_runs(workflow_id="odd", from_date=1002.0, limit=1)) == (["r5"], 2)
    assert ids(store.list_runs(workflow_id="none")) == ([], 0)


def test_runs_created_at_the_same_time_are_listed_by_run_id(store: SnapshotStore) -> None:
    for run_id in ("c", "a", "b"):
        store.create(rec(run_id))
    assert [record.run_id for record in store.list_runs()[0]] == ["a", "b", "c"]


def test_unfinished_is_the_pending_running_and_waiting_runs(store: SnapshotStore) -> None:
    for n, status in enumerate(
        ["pending", "running", "waiting", "suspended", "success", "failed", "canceled"]
    ):
        store.create(rec(f"r{n}"))
        if status != "pending":
            save_and_wait(store, rec(f"r{n}", 1, status))
    assert sorted(record.run_id for record in store.unfinished()) == ["r0", "r1", "r2"]


# --- delete and prune -------------------------------------------------------------------


def test_delete_says_whether_there_was_a_run(store: SnapshotStore) -> None:
    store.create(rec("r1"))
    save_and_wait(store, rec("r1", 1, "success"))
    assert store.delete("r1")
    assert not store.delete("r1")
    assert store.load("r1") is None
    assert store.create(rec("r1"))


@pytest.mark.parametrize("status", ["pending", "running", "waiting", "suspended"])
def test_delete_leaves_a_run_that_has_not_ended(store: SnapshotStore, status: str) -> None:
    # Checked with the delete, not before it: a run restarted between a caller's look
    # and its delete was deleted under its actor, whose writes then had no row.
    store.create(rec("r1"))
    save_and_wait(store, rec("r1", 1, status, wake_at=2e9 if status == "waiting" else None))
    assert not store.delete("r1")
    assert store.load("r1") is not None


def test_a_save_of_a_run_that_is_not_there_stores_nothing(store: SnapshotStore) -> None:
    # Only create() records a run. A save still on its way when its run was deleted
    # (the registry's copy of a cancel, say) used to bring the run back.
    store.create(rec("r1"))
    save_and_wait(store, rec("r1", 1, "failed"))
    assert store.delete("r1")
    save_and_wait(store, rec("r1", 3, "canceled"), rec("nobody", 1, "running"))
    assert store.load("r1") is None
    assert store.load("nobody") is None
    assert store.create(rec("r1", data=b"a run of that id again"))
    assert store.load("r1") == rec("r1", data=b"a run of that id again")


def test_a_save_of_a_deleted_run_leaves_a_new_run_of_its_id_alone(store: SnapshotStore) -> None:
    # The id of a deleted run is free again; a record of the deleted run still on its way
    # (older incarnation: created at another time) must not land on the new run.
    store.create(rec("r1", created_at=1_000.0))
    save_and_wait(store, rec("r1", 1, "canceled", created_at=1_000.0))
    assert store.delete("r1")
    store.create(rec("r1", created_at=2_000.0, data=b"the new run"))
    save_and_wait(store, rec("r1", 5, "canceled", created_at=1_000.0))
    assert store.load("r1") == rec("r1", created_at=2_000.0, data=b"the new run")
    save_and_wait(store, rec("r1", 1, "running", created_at=2_000.0))
    assert store.load("r1") == rec("r1", 1, "running", created_at=2_000.0)


@pytest.mark.parametrize("reopen", [False, True], ids=["replace", "reopen"])
def test_a_compare_and_set_of_a_deleted_run_leaves_a_new_run_of_its_id_alone(
    store: SnapshotStore, reopen: bool
) -> None:
    # A restart (or resume, or cancel) reads the run, then compares and sets on its seq.
    # The run deleted meanwhile and a new one of the same id at the same seq: the set
    # landed on the new run, whose row then held the old run's snapshot (its actor's
    # saves, of the old run, never applied: it stayed running for ever).
    store.create(rec("r1", created_at=2_000.0, data=b"the new run"))
    save_and_wait(store, rec("r1", 2, "canceled" if reopen else "suspended", created_at=2_000.0))
    late = rec("r1", 3, "running", created_at=1_000.0)  # of the deleted run

    assert not store.replace(late, 2, reopen=reopen)
    loaded = store.load("r1")
    assert loaded is not None and loaded.seq == 2 and loaded.created_at == 2_000.0


def test_prune_deletes_only_ended_runs(store: SnapshotStore) -> None:
    statuses = ["pending", "running", "waiting", "suspended", "success", "failed", "canceled"]
    for n, status in enumerate(statuses):
        store.create(rec(f"r{n}", created_at=10.0))
        if status != "pending":
            save_and_wait(store, rec(f"r{n}", 1, status, created_at=10.0, updated_at=20.0))
    assert store.prune(ended_before=1e12) == 3
    left = sorted(record.status for record in store.list_runs(limit=None)[0])
    assert left == sorted(statuses[:4])


def test_prune_by_age_then_keeps_the_newest(store: SnapshotStore) -> None:
    for n in range(6):
        store.create(rec(f"r{n}"))
        save_and_wait(store, rec(f"r{n}", 1, "success", updated_at=100.0 + n))
    assert store.prune(ended_before=102.0) == 2  # r0, r1
    assert store.prune(keep=2) == 2  # r2, r3
    assert sorted(record.run_id for record in store.list_runs()[0]) == ["r4", "r5"]


def test_prune_with_a_status_takes_only_that_status(store: SnapshotStore) -> None:
    for n, status in enumerate(["success", "failed", "canceled", "failed"]):
        store.create(rec(f"r{n}"))
        save_and_wait(store, rec(f"r{n}", 1, status))
    assert store.prune(ended_before=1e12, status="failed") == 2
    assert store.prune(ended_before=1e12, status="running") == 0
    assert sorted(record.status for record in store.list_runs()[0]) == ["canceled", "success"]


# --- close ------------------------------------------------------------------------------


def test_records_stay_readable_after_close(store: SnapshotStore) -> None:
    store.create(rec("r1"))
    save_and_wait(store, rec("r1", 1, "success"))
    store.close()
    assert store.load("r1") == rec("r1", 1, "success")
    assert store.list_runs()[1] == 1
