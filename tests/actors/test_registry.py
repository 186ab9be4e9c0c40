"""RegistryActor: newest snapshot per run, in order, final once terminal, waiters woken."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pykka
import pytest
import structlog
from structlog.testing import capture_logs

from actors._dispatch import UnexpectedMessageError
from actors.messages import (
    RecordFailure,
    SnapshotTaken,
    StepWrote,
    SubscribeRun,
    UnwatchRun,
    WatchRun,
)
from actors.registry import RegistryActor
from runtime._errors import StoreUnavailableError
from runtime._snapshot import Snapshot, decode, encode
from runtime._stores.base import SnapshotRecord
from runtime._stores.memory import MemoryStore
from runtime._stores.sqlite import SQLiteStore
from runtime._sync import ChannelClosed, EventChannel
from tests._support import wait_until

WAIT = 10.0
TERMINAL = {"success", "failed"}


CREATED_AT = time.time()  # one run's snapshots share it, as a run actor's do


def snapshot(run_id: str, seq: int, status: str, **changes: Any) -> Snapshot:
    now = time.time()
    data: Snapshot = {
        "run_id": run_id,
        "workflow_id": "wf",
        "seq": seq,
        "status": status,
        "input": {"value": "in"},
        "result": None,
        "error": None,
        "steps": {},
        "next_step": 0,
        "carry": {"value": "in"},
        "progress": None,
        "wake_at": None,
        "suspended": {},
        "resume": None,
        "scopes": {},
        "state": None,
        "request_context": {},
        "include_state": False,
        "trace_id": "ab" * 16,
        "span_id": "cd" * 8,
        "metadata": {},
        "created_at": CREATED_AT,
        "updated_at": now,
    }
    data.update(changes)  # type: ignore[typeddict-item]
    return data


def record(run_id: str, seq: int, status: str, **changes: Any) -> SnapshotRecord:
    data = snapshot(run_id, seq, status, **changes)
    return SnapshotRecord(
        run_id=run_id,
        workflow_id=data["workflow_id"],
        seq=seq,
        status=status,
        data=encode(data),
        created_at=data["created_at"],
        updated_at=data["updated_at"],
        trace_id=data["trace_id"],
    )


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def registry(store: MemoryStore) -> Iterator[pykka.ActorRef[Any]]:
    ref = RegistryActor.start(store)
    yield ref
    ref.stop(timeout=WAIT)


def take(registry: pykka.ActorRef[Any], rec: SnapshotRecord) -> None:
    """Hand the registry a snapshot and wait until it has handled it."""
    registry.ask(SnapshotTaken(record=rec, terminal=rec.status in TERMINAL), timeout=WAIT)


def watch(registry: pykka.ActorRef[Any], run_id: str) -> threading.Event:
    event = threading.Event()
    registry.ask(WatchRun(run_id=run_id, event=event), timeout=WAIT)
    return event


def test_a_newer_snapshot_replaces_the_stored_one(
    registry: pykka.ActorRef[Any], store: MemoryStore
) -> None:
    store.create(record("r", 0, "pending"))
    newer = record("r", 1, "running")

    take(registry, newer)

    assert store.load("r") == newer


@pytest.mark.parametrize("late_seq", [1, 2], ids=["older", "equal"])
def test_an_older_or_equal_snapshot_never_replaces_a_newer_one(
    registry: pykka.ActorRef[Any], store: MemoryStore, late_seq: int
) -> None:
    store.create(record("r", 0, "pending"))
    newer = record("r", 2, "running", next_step=1)
    take(registry, newer)

    take(registry, record("r", late_seq, "running", next_step=0))

    assert store.load("r") == newer


@pytest.mark.parametrize(
    ("terminal", "late"), [("success", "running"), ("success", "failed"), ("failed", "success")]
)
def test_nothing_replaces_a_terminal_snapshot(
    registry: pykka.ActorRef[Any], store: MemoryStore, terminal: str, late: str
) -> None:
    store.create(record("r", 0, "pending"))
    final = record("r", 3, terminal)
    take(registry, final)

    take(registry, record("r", 4, late))
    take(registry, record("r", 99, "pending"))

    assert store.load("r") == final


def test_on_recorded_hears_true_once_the_store_holds_the_snapshot(
    registry: pykka.ActorRef[Any], store: MemoryStore
) -> None:
    store.create(record("r", 0, "pending"))
    canceled = record("r", 1, "canceled")
    heard: list[tuple[bool, SnapshotRecord | None]] = []

    registry.ask(
        SnapshotTaken(
            record=canceled,
            terminal=True,
            on_recorded=lambda stored: heard.append((stored, store.load("r"))),
        ),
        timeout=WAIT,
    )

    assert heard == [(True, canceled)]  # already stored when it was told


def test_on_recorded_hears_false_for_a_snapshot_the_store_did_not_keep(
    registry: pykka.ActorRef[Any], store: MemoryStore
) -> None:
    store.create(record("r", 0, "pending"))
    take(registry, record("r", 2, "success"))
    heard: list[bool] = []

    registry.ask(
        SnapshotTaken(record=record("r", 3, "canceled"), terminal=True, on_recorded=heard.append),
        timeout=WAIT,
    )

    assert heard == [False]
    stored = store.load("r")
    assert stored is not None and stored.status == "success"


def test_watching_a_terminal_run_sets_the_event_at_once(
    registry: pykka.ActorRef[Any], store: MemoryStore
) -> None:
    store.create(record("r", 0, "pending"))
    take(registry, record("r", 1, "success"))

    assert watch(registry, "r").is_set()


def test_watching_an_unknown_run_sets_the_event_at_once(registry: pykka.ActorRef[Any]) -> None:
    assert watch(registry, "never-started").is_set()


def test_watching_a_running_run_sets_the_event_only_once_it_is_terminal(
    registry: pykka.ActorRef[Any], store: MemoryStore
) -> None:
    store.create(record("r", 0, "pending"))
    store.create(record("other-run", 0, "pending"))
    first, second = watch(registry, "r"), watch(registry, "r")
    other = watch(registry, "other-run")

    take(registry, record("r", 1, "running"))
    assert not first.is_set()
    assert not second.is_set()

    take(registry, record("r", 2, "success"))
    assert first.is_set()
    assert second.is_set()
    assert not other.is_set()


def test_a_waiter_given_up_on_is_forgotten_and_the_others_still_woken(
    registry: pykka.ActorRef[Any], store: MemoryStore
) -> None:
    """A wait that timed out (or was cancelled) is not kept until its run ends.

    Before, ``await run.wait_async(timeout=5)`` asked again and again of a run that lasts
    a day (a long poll) left one event per call in the registry, until the run ended.
    """
    store.create(record("r", 0, "pending"))
    take(registry, record("r", 1, "running"))
    given_up = [watch(registry, "r") for _ in range(3)]
    kept = watch(registry, "r")
    for event in given_up:
        registry.ask(UnwatchRun(run_id="r", event=event), timeout=WAIT)
    registry.ask(UnwatchRun(run_id="r", event=threading.Event()), timeout=WAIT)  # unknown: no-op
    registry.ask(UnwatchRun(run_id="nobody", event=kept), timeout=WAIT)

    take(registry, record("r", 2, "success"))

    assert kept.is_set()
    assert not any(event.is_set() for event in given_up)


def test_an_ignored_terminal_snapshot_does_not_wake_waiters(
    registry: pykka.ActorRef[Any], store: MemoryStore
) -> None:
    store.create(record("r", 0, "pending"))
    take(registry, record("r", 5, "running"))
    waiter = watch(registry, "r")

    take(registry, record("r", 3, "success"))  # stale: seq 3 < 5

    assert not waiter.is_set()
    assert store.load("r").status == "running"  # type: ignore[union-attr]


def test_record_failure_fails_a_running_run_and_its_running_step(
    registry: pykka.ActorRef[Any], store: MemoryStore
) -> None:
    store.create(record("r", 0, "pending"))
    step = {
        "status": "running",
        "payload": {"value": "in"},
        "output": None,
        "error": None,
        "started_at": time.time(),
        "ended_at": None,
    }
    done = {**step, "status": "success", "output": {"value": "out"}, "ended_at": time.time()}
    take(registry, record("r", 4, "running", steps={"first": done, "second": step}))
    waiter = watch(registry, "r")
    error = {"name": "RunCrashedError", "message": "the run actor failed", "details": {}}

    registry.ask(RecordFailure(run_id="r", error=error), timeout=WAIT)

    stored = store.load("r")
    assert stored is not None
    assert (stored.status, stored.seq) == ("failed", 5)
    data = decode(stored.data)
    assert (data["status"], data["seq"], data["error"], data["result"]) == (
        "failed",
        5,
        error,
        None,
    )
    assert data["steps"]["first"] == done
    assert data["steps"]["second"]["status"] == "failed"
    assert data["steps"]["second"]["error"] == error
    assert data["steps"]["second"]["ended_at"] is not None
    assert waiter.is_set()


def test_record_failure_fails_a_pending_run(
    registry: pykka.ActorRef[Any], store: MemoryStore
) -> None:
    store.create(record("r", 0, "pending"))
    error = {"name": "RuntimeStoppedError", "message": "stopped", "details": {}}

    registry.ask(RecordFailure(run_id="r", error=error), timeout=WAIT)

    stored = store.load("r")
    assert stored is not None
    assert (stored.status, stored.seq) == ("failed", 1)


@pytest.mark.parametrize("status", ["success", "failed"])
def test_record_failure_is_ignored_for_a_terminal_run(
    registry: pykka.ActorRef[Any], store: MemoryStore, status: str
) -> None:
    store.create(record("r", 0, "pending"))
    final = record("r", 2, status)
    take(registry, final)

    registry.ask(
        RecordFailure(run_id="r", error={"name": "X", "message": "x", "details": {}}),
        timeout=WAIT,
    )

    assert store.load("r") == final


def test_record_failure_for_an_unknown_run_records_nothing(
    registry: pykka.ActorRef[Any], store: MemoryStore
) -> None:
    registry.ask(
        RecordFailure(run_id="nobody", error={"name": "X", "message": "x", "details": {}}),
        timeout=WAIT,
    )

    assert store.load("nobody") is None
    assert len(store) == 0


def test_stopping_the_registry_wakes_every_waiter(store: MemoryStore) -> None:
    registry = RegistryActor.start(store)
    for run_id in ("a", "b"):
        store.create(record(run_id, 0, "pending"))
    waiters = [watch(registry, "a"), watch(registry, "a"), watch(registry, "b")]
    assert not any(event.is_set() for event in waiters)

    registry.stop(timeout=WAIT)

    assert all(event.is_set() for event in waiters)


def test_snapshots_from_many_threads_leave_the_highest_seq(
    registry: pykka.ActorRef[Any], store: MemoryStore
) -> None:
    store.create(record("r", 0, "pending"))
    seqs = list(range(1, 201))
    records = {seq: record("r", seq, "running", next_step=seq) for seq in seqs}
    go = threading.Barrier(4)

    def send(part: list[int]) -> None:
        go.wait()
        for seq in part:
            registry.tell(SnapshotTaken(record=records[seq], terminal=False))

    threads = [threading.Thread(target=send, args=(seqs[index::4][::-1],)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    watch(registry, "r")  # a round trip: everything told before it has been handled

    assert store.load("r") == records[200]


@dataclass(frozen=True)
class Stray:
    """A message outside the registry's protocol."""

    run_id: str


def test_a_message_outside_the_protocol_is_refused_and_the_registry_goes_on(
    registry: pykka.ActorRef[Any], store: MemoryStore
) -> None:
    with pytest.raises(
        UnexpectedMessageError, match=r"RegistryActor .* does not accept .*test_registry\.Stray"
    ):
        registry.ask(Stray("r"), timeout=WAIT)
    with capture_logs() as logs:
        registry.tell(Stray("r"))
        store.create(record("r", 0, "pending"))
        take(registry, record("r", 1, "success"))
    structlog.reset_defaults()

    assert [(entry["event"], entry["log_level"]) for entry in logs] == [
        ("unexpected_message", "error")
    ]
    assert registry.is_alive()
    assert watch(registry, "r").is_set()


def test_on_a_durable_store_a_new_run_of_a_deleted_runs_id_has_its_snapshots_kept(
    tmp_path: Any,
) -> None:
    # The registry remembers the last snapshot of each run in progress on a durable
    # store, and drops an older one. A run of the same id started after the first was
    # deleted had its snapshots dropped as older than the deleted run's: it stayed
    # pending for ever, its actor waiting for a commit (1 race in 5 on PostgreSQL).
    store = SQLiteStore(tmp_path / "runs.db")
    registry = RegistryActor.start(store)
    try:
        store.create(record("r", 0, "pending", created_at=1_000.0))
        take(registry, record("r", 3, "running", created_at=1_000.0))  # remembered
        store.save([record("r", 4, "canceled", created_at=1_000.0)])  # ended elsewhere
        wait_until_stored = time.monotonic() + WAIT
        while (done := store.load("r")) is None or done.status != "canceled":
            assert time.monotonic() < wait_until_stored
            time.sleep(0.01)
        assert store.delete("r")
        store.create(record("r", 0, "pending", created_at=2_000.0))

        committed = threading.Event()
        registry.ask(
            SnapshotTaken(
                record=record("r", 1, "running", created_at=2_000.0),
                terminal=False,
                on_recorded=lambda kept: committed.set() if kept else None,
            ),
            timeout=WAIT,
        )

        assert committed.wait(WAIT)
        again = store.load("r")
        assert again is not None and (again.seq, again.status) == (1, "running")
    finally:
        registry.stop(timeout=WAIT)
        store.close()


def test_a_run_pruned_before_its_end_reaches_the_registry_wakes_its_waiters(
    registry: pykka.ActorRef[Any], store: MemoryStore
) -> None:
    # In memory a run actor stores its run's end itself, then tells the registry (which
    # wakes who waits). Retention may delete the ended run in between: its waiters must
    # wake all the same (and find it deleted), not wait for ever.
    store.create(record("r1", 0, "running"))
    woken = watch(registry, "r1")
    ended = record("r1", 1, "success")
    store.save((ended,))
    assert store.delete("r1")  # pruned as soon as it ended
    take(registry, ended)
    assert woken.wait(WAIT)
    assert store.load("r1") is None  # and not brought back


def subscribe(registry: pykka.ActorRef[Any], run_id: str) -> EventChannel[Any]:
    channel: EventChannel[Any] = EventChannel()
    registry.ask(SubscribeRun(run_id=run_id, channel=channel), timeout=WAIT)
    return channel


def drained(channel: EventChannel[Any]) -> list[tuple[int, str, str]]:
    """The events a closed channel holds: (seq, type, status); raises if it is still open."""
    told = []
    while True:
        try:
            event = channel.get(0)
        except ChannelClosed:
            return told
        told.append((event.seq, event.type, str(event.status)))


def test_a_watch_opened_while_the_store_is_ahead_leaves_the_others_told_everything(
    registry: pykka.ActorRef[Any], store: MemoryStore
) -> None:
    # In memory a run actor saves its snapshots itself and tells the registry after: a
    # second watch opened in between reads the newer record from the store. The first
    # watch was told nothing of what that read found (the registry, told it later, had
    # seen it), and was closed at the run's end without its last events.
    store.create(record("r", 0, "pending"))
    first = subscribe(registry, "r")
    take(registry, record("r", 1, "running"))
    step = {"status": "success", "output": {"value": "out"}, "attempts": 1}
    ahead = [
        record("r", 2, "running", steps={"a": {**step, "status": "running", "output": None}}),
        record("r", 3, "success", steps={"a": step}, result={"value": "out"}),
    ]
    store.save(ahead)  # the run actor's own saves
    second = subscribe(registry, "r")
    for rec in ahead:  # then it tells the registry
        registry.ask(SnapshotTaken(record=rec, terminal=rec.status in TERMINAL, stored=True))

    told, replayed = drained(first), drained(second)
    assert told == replayed
    assert [kind for _, kind, _ in told] == [
        "status",  # pending
        "status",  # running
        "step_started",
        "step_finished",
        "status",  # success
    ]
    assert told[-1][2] == "success"
    assert [seq for seq, _, _ in told] == [1, 2, 3, 4, 5]


def test_a_loops_next_iteration_seen_late_is_told_as_an_end_and_a_start_not_a_retry(
    registry: pykka.ActorRef[Any], store: MemoryStore
) -> None:
    # Another process's watcher reads the newest record only: between two of its reads a
    # loop's step may have been retried, then gone round again. That is not a retry.
    store.create(record("r", 0, "pending"))
    watcher = subscribe(registry, "r")
    running = {"status": "running", "output": None, "started_at": 1.0, "ended_at": None}
    take(registry, record("r", 1, "running", steps={"loop": {**running, "attempts": 2}}))
    later = {**running, "started_at": 2.0, "iterations": 3}
    take(registry, record("r", 2, "running", steps={"loop": later}))
    done = {**later, "status": "success", "output": {"value": "v"}, "ended_at": 3.0}
    take(registry, record("r", 3, "success", steps={"loop": done}, result={"value": "v"}))

    told = [(kind, status) for _, kind, status in drained(watcher)]
    assert told == [
        ("status", "pending"),
        ("status", "running"),
        ("step_started", "running"),
        ("step_finished", "running"),  # the iteration (or attempt) seen running ended
        ("step_started", "running"),  # and the third iteration began
        ("step_finished", "success"),
        ("status", "success"),
    ]


def test_a_reconnect_numbered_by_a_log_this_registry_lacks_is_told_the_run_again(
    registry: pykka.ActorRef[Any], store: MemoryStore
) -> None:
    # A stream's client reconnects to a runtime that has no log of the run (another
    # process, a restart, a log that went): it was told nothing after its last number,
    # and its stream ended without the run's end, so it reconnected again and again.
    step = {"status": "success", "output": {"value": "out"}, "started_at": 1.0, "ended_at": 2.0}
    store.create(record("r", 0, "pending"))
    store.save([record("r", 5, "success", steps={"a": step}, result={"value": "out"})])
    channel: EventChannel[Any] = EventChannel()
    registry.ask(SubscribeRun(run_id="r", channel=channel, from_seq=40), timeout=WAIT)

    told = drained(channel)
    assert [seq for seq, _, _ in told] == [41, 42, 43, 44, 45]
    kinds = [kind for _, kind, _ in told]
    assert kinds == ["status", "status", "step_started", "step_finished", "status"]
    # Told from its record: its steps moved while it ran, and then it ended.
    assert [status for _, _, status in told] == [
        "pending",
        "running",
        "running",
        "running",
        "success",
    ]
    # A log this registry keeps goes on from where it is.
    again: EventChannel[Any] = EventChannel()
    registry.ask(SubscribeRun(run_id="r", channel=again, from_seq=43), timeout=WAIT)
    assert [seq for seq, _, _ in drained(again)] == [44, 45]


class HeldCommits(MemoryStore):
    """A durable store in memory whose commits come when the test says: saved, not committed."""

    durable = True

    def __init__(self) -> None:
        super().__init__()
        self.commits: list[Callable[[], None]] = []

    def save(
        self,
        records: Any,
        on_commit: Callable[[], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        super().save(records)
        if on_commit is not None:
            self.commits.append(on_commit)


def test_on_a_durable_store_watchers_are_told_a_runs_end_once_it_is_committed() -> None:
    # Told when taken, a watcher (a UI's stream) saw the run succeed; a crash before
    # the commit then ran its last step again, and it could end otherwise.
    store = HeldCommits()
    ref = RegistryActor.start(store)
    try:
        store.create(record("r", 0, "pending"))
        watcher = subscribe(ref, "r")
        take(ref, record("r", 1, "running"))
        store.commits.pop()()
        ref.ask(SnapshotTaken(record=record("r", 2, "success"), terminal=True), timeout=WAIT)

        ref.ask(SubscribeRun(run_id="other", channel=EventChannel()), timeout=WAIT)  # a turn
        assert [event.type for event in _taken(watcher)] == ["status", "status"]  # not the end
        assert not watcher.closed

        store.commits.pop()()  # now it is durable
        wait_until(lambda: watcher.closed, timeout=WAIT, what="the watch ends with the run")
        told = drained(watcher)
        assert [(kind, status) for _, kind, status in told] == [("status", "success")]
    finally:
        ref.stop(timeout=WAIT)


def _taken(channel: EventChannel[Any]) -> list[Any]:
    """The events queued in an open channel, taken."""
    taken = []
    while len(channel):
        taken.append(channel.get(0))
    return taken


# --- waits arriving together ------------------------------------------------------------


class _CountedReads(SQLiteStore):
    """A SQLite store (a shared one) that counts the registry's reads of runs."""

    def __init__(self, path: Any) -> None:
        super().__init__(path)
        self.loads = 0
        self.loaded_many: list[int] = []
        self.fail_reads = False

    def load(self, run_id: str) -> SnapshotRecord | None:
        if threading.current_thread().name.startswith("Registry"):
            if self.fail_reads:
                raise StoreUnavailableError("the store is down (a test's)")
            self.loads += 1
        return super().load(run_id)

    def load_many(self, run_ids: Any) -> list[SnapshotRecord]:
        if threading.current_thread().name.startswith("Registry"):
            if self.fail_reads:
                raise StoreUnavailableError("the store is down (a test's)")
            self.loaded_many.append(len(run_ids))
        return super().load_many(run_ids)


@contextlib.contextmanager
def _busy(registry: pykka.ActorRef[Any]) -> Iterator[None]:
    """The registry held in a handler meanwhile: what is told to it waits in its mailbox."""
    entered, release = threading.Event(), threading.Event()

    def hold() -> None:
        entered.set()
        release.wait(WAIT)

    registry.tell(StepWrote(run_id="busy", path="s", data=None, at=0.0, taken=hold))
    assert entered.wait(WAIT)
    try:
        yield
    finally:
        release.set()


def test_waits_arriving_together_read_their_runs_in_one_read(tmp_path: Path) -> None:
    # Clients reconnecting together: thousands of waits, each read from the store on
    # the registry's thread one after another while every other run's wait queued
    # behind them (10,000 took 9.4 s on PostgreSQL).
    store = _CountedReads(tmp_path / "runs.db")
    registry = RegistryActor.start(store)
    try:
        for n in range(60):
            store.create(record(f"r{n}", 0, "pending"))
            store.save([record(f"r{n}", 1, "success" if n % 3 == 0 else "running")])
        # Saved by the store's writer, in a while.
        wait_until(lambda: all(r.seq == 1 for r in store.load_many([f"r{n}" for n in range(60)])))
        store.loaded_many.clear()
        with _busy(registry):
            store.loads = 0  # the held message's own read of its run
            events = {f"r{n}": threading.Event() for n in range(60)}
            for run_id, event in events.items():
                registry.tell(WatchRun(run_id=run_id, event=event))
            registry.tell(WatchRun(run_id="nobody", event=(unknown := threading.Event())))
        assert unknown.wait(WAIT)
        registry.ask(UnwatchRun(run_id="nobody", event=unknown), timeout=WAIT)  # after the read

        assert store.loaded_many == [61] and store.loads == 0
        for n in range(60):
            # Settled: woken at once; running: woken at its end.
            assert events[f"r{n}"].is_set() is (n % 3 == 0)
        take(registry, record("r1", 2, "success"))
        assert events["r1"].wait(WAIT)
        assert not events["r2"].is_set()
    finally:
        registry.stop(timeout=WAIT)
        store.close()


def test_a_wait_of_a_run_in_progress_here_is_not_read_from_a_durable_store(
    tmp_path: Path,
) -> None:
    # Its end comes through the registry itself: a read would tell nothing new.
    store = _CountedReads(tmp_path / "runs.db")
    registry = RegistryActor.start(store)
    try:
        store.create(record("r", 0, "pending"))
        take(registry, record("r", 1, "running"))
        event = watch(registry, "r")
        assert store.loads == 0 and store.loaded_many == []
        assert not event.is_set()

        take(registry, record("r", 2, "success"))
        assert event.wait(WAIT)
    finally:
        registry.stop(timeout=WAIT)
        store.close()


@pytest.mark.usefixtures("_structlog_reset")
def test_waits_whose_read_fails_are_woken_to_read_again_not_left_unread(
    tmp_path: Path,
) -> None:
    # A read that failed (the server restarting) raised out of the handler: the waiter
    # stayed noted, never read, and a run that had settled meanwhile never woke it.
    store = _CountedReads(tmp_path / "runs.db")
    registry = RegistryActor.start(store)
    try:
        store.create(record("r", 0, "pending"))
        store.save([record("r", 1, "success")])  # by the store's writer, in a while
        wait_until(lambda: (done := store.load("r")) is not None and done.status == "success")
        store.fail_reads = True
        with capture_logs() as logs:
            event = watch(registry, "r")
        assert event.is_set()  # its waiter reads the store itself, through the outage
        assert [e["event"] for e in logs] == ["run_waits_read_failed"]
        store.fail_reads = False
        assert watch(registry, "r").is_set()
    finally:
        registry.stop(timeout=WAIT)
        store.close()


def test_a_record_in_parts_lost_to_a_fault_leaves_the_next_one_readable(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A record lost on its way to the store (a fault in the registry), then the run's
    # next record, made on top of it before its actor heard: that one named parts the
    # store never wrote, and the run, ended by then, read as damaged ("hold 1 parts where
    # the head names 2") rather than as the fault left it.
    from runtime._snapshot import IncrementalEncoder

    store = SQLiteStore(tmp_path / "runs.db")
    data = snapshot("r", 0, "running")
    encoder = IncrementalEncoder(data, whole_until=-1)
    first = encoder.next_record(time.time())
    assert store.create(first)
    lost_seq, go = 2, threading.Event()
    original = RegistryActor._store_snapshot

    def faulty(self: RegistryActor, message: SnapshotTaken) -> None:
        if message.record.seq == lost_seq:
            go.wait(WAIT)  # the next record is in the mailbox by now
            raise RuntimeError("injected fault")
        original(self, message)

    monkeypatch.setattr(RegistryActor, "_store_snapshot", faulty)
    registry = RegistryActor.start(store)
    try:
        data["steps"] = {"a": {"status": "success", "output": {"value": "a" * 50}}}
        lost = encoder.next_record(time.time())
        data["steps"] = {**data["steps"], "b": {"status": "success", "output": {"value": "b"}}}
        data["status"] = "success"
        last = encoder.next_record(time.time())
        assert last.parts is not None and last.parts.base_seq == lost_seq  # built on it
        registry.tell(SnapshotTaken(record=lost, terminal=False))
        registry.tell(SnapshotTaken(record=last, terminal=True))
        go.set()
        wait_until(
            lambda: (stored := store.load("r")) is not None and stored.status == "success",
            timeout=WAIT,
            what="the last record stored",
        )
        stored = store.load("r")
        assert stored is not None
        kept = decode(stored.data, "r")  # every part it names is there
        assert set(kept["steps"]) == {"a", "b"}
    finally:
        registry.stop(timeout=WAIT)
        store.close()
