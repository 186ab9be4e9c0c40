"""MemoryStore under threads: a save never holds the store's lock where another thread can run."""

from __future__ import annotations

import time
from collections.abc import Callable

from runtime import MemoryStore, SnapshotRecord
from tests._support import looks_at_lock

NOW = time.time()
RUNS = [f"r{index}" for index in range(50)]


def running(run_id: str, seq: int) -> SnapshotRecord:
    return SnapshotRecord(
        run_id=run_id,
        workflow_id="wf",
        seq=seq,
        status="running",
        data=b"x" * 40,
        created_at=NOW,
        updated_at=NOW + seq,
        trace_id="ab" * 16,
    )


def _saved_while_looked_at(record: Callable[[str, int], SnapshotRecord]) -> MemoryStore:
    """A store with :data:`RUNS`, each saved as ``record(run_id, seq)`` for seq 1 to 199,
    while a second thread looks at the store's lock: it must never find it held."""
    store = MemoryStore()
    for run_id in RUNS:
        assert store.create(running(run_id, 0))
    saves = [(record(run_id, seq),) for seq in range(1, 200) for run_id in RUNS]

    def save_all() -> None:
        for records in saves:
            store.save(records)

    looks = looks_at_lock(store._lock, save_all)

    assert looks["free"] > 100, looks  # the two threads did take turns
    assert looks["held"] == 0, looks
    return store


def test_a_thread_never_finds_the_lock_held_by_a_save() -> None:
    # A run actor saves each run several times while callers create runs. If a save
    # could hand the interpreter to another thread while holding the store's lock,
    # a create would find the lock taken, sleep on it, then wait for the interpreter
    # again: 200 µs and more a time on two busy cores. Python hands the interpreter
    # over only where a thread calls a function or loops back, and a save does
    # neither under the lock: another thread only ever finds it free.
    store = _saved_while_looked_at(running)
    assert all(store.load(run_id).seq == 199 for run_id in RUNS)  # type: ignore[union-attr]


def test_a_save_onto_a_let_go_record_never_holds_the_lock_where_another_thread_runs() -> None:
    # A sleeping run's record is kept as a plain tuple (see memory._kept); every wake-up
    # saves a record onto it, and that too must not hand the interpreter over under the
    # lock (it used to turn the tuple back into a record there: a call).
    def record(run_id: str, seq: int) -> SnapshotRecord:
        # Odd: the run goes to sleep (let go, kept as a tuple); even: it wakes onto that.
        made = running(run_id, seq)
        return made._replace(status="waiting", wake_at=NOW + 60) if seq % 2 else made

    store = _saved_while_looked_at(record)
    assert all(store.load(run_id).status == "waiting" for run_id in RUNS)  # type: ignore[union-attr]
