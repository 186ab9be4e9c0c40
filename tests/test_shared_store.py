"""The promises of a shared store: claims, leases, fencing, the queue, cancels, workers, hints.

Each test opens several stores on one database through the ``shared_store``
factory: each store is a worker of its own, as separate processes would be. A
worker's lease is renewed only by ``heartbeat()``, so a *stalled* worker is
simply one whose ``heartbeat()`` nobody calls (a tiny lease makes it run out).

To run the suite on another shared store, add its name to the fixture's params
and say in ``shared_store`` where its database is.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from actors._watcher import StoreWatcher
from runtime import Runtime, create_step, create_workflow
from runtime._errors import StoreError
from runtime._queue import QueueLimits
from runtime._stores.base import RunFencedError, SharedStore, SnapshotRecord
from runtime._stores.open import open_store
from tests._support import Value, stall_writer, wait_for_no_callboard_threads, wait_until
from tests.test_store_contract import rec

LEASE = 0.5
"""The lease of a worker that a test lets stall: short, so tests stay fast."""


class Outcome:
    """What a save reported: committed, or the error it got."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.committed = False
        self.error: BaseException | None = None

    def commit(self) -> None:
        self.committed = True
        self.done.set()

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.done.set()

    def wait(self) -> Outcome:
        assert self.done.wait(10), "the save was never reported"
        return self


def save(store: SharedStore, *records: SnapshotRecord) -> Outcome:
    """Save and wait for the outcome."""
    outcome = Outcome()
    store.save(records, on_commit=outcome.commit, on_error=outcome.fail)
    return outcome.wait()


class SharedStores:
    """Opens stores on one database, each a worker of its own; closes them all afterwards.

    Attributes:
        hears_others: Whether the stores pass hints between processes.
    """

    def __init__(self, location: str, *, hears_others: bool) -> None:
        self.location = location
        self.hears_others = hears_others
        self._opened: list[SharedStore] = []

    def open(self, *, lease: float = 10.0) -> SharedStore:
        store = open_store(self.location, lease=lease)
        self._opened.append(store)  # type: ignore[arg-type]
        assert isinstance(store, SharedStore)
        return store

    def close(self) -> None:
        for store in self._opened:
            store.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def shared_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SharedStores]:
    """A factory of stores that share one fresh database; no store thread may outlive it."""
    if request.param == "postgres":
        stores = SharedStores(request.getfixturevalue("postgres_url"), hears_others=True)
    else:
        stores = SharedStores(str(tmp_path / "runs.db"), hears_others=False)
    try:
        yield stores
    finally:
        stores.close()
    left = wait_for_no_callboard_threads()
    assert not left, f"threads left after close(): {[t.name for t in left]}"


def reaped(reaper: SharedStore, at_least: int = 1) -> int:
    """Reap until at least this many runs went back (a lease passes by the store's clock)."""
    total = 0

    def more() -> bool:
        nonlocal total
        total += reaper.reap()
        return total >= at_least

    wait_until(more, timeout=10, what=f"{at_least} runs reaped")
    return total


def ids(found: list[SnapshotRecord]) -> list[str]:
    return [record.run_id for record in found]


# --- create and claim -----------------------------------------------------------------


def test_a_run_created_held_is_its_creators_and_not_queued(shared_store: SharedStores) -> None:
    a, b = shared_store.open(), shared_store.open()
    assert a.create(rec("r1"))
    assert a.held() == 1
    assert a.queued() == []
    assert b.claim(["wf"], 10) == []


def test_a_run_created_without_hold_is_queued_for_any_worker(shared_store: SharedStores) -> None:
    a, b = shared_store.open(), shared_store.open()
    assert a.create(rec("r1"), hold=False)
    assert a.held() == 0
    assert ids(b.queued()) == ["r1"]
    claimed = b.claim(["wf"], 10)
    assert [(c.record, c.cancel_requested) for c in claimed] == [(rec("r1"), False)]
    assert b.held() == 1
    assert b.queued() == []
    assert a.claim(["wf"], 10) == []


def test_claim_takes_the_oldest_runs_of_the_workflows_asked_up_to_the_limit(
    shared_store: SharedStores,
) -> None:
    a = shared_store.open()
    for n in (3, 1, 4, 0, 2):
        a.create(rec(f"r{n}", created_at=100.0 + n), hold=False)
    a.create(rec("other", workflow_id="other", created_at=1.0), hold=False)
    assert [c.record.run_id for c in a.claim(["wf"], 2)] == ["r0", "r1"]
    assert [c.record.run_id for c in a.claim(["wf", "nope"], 10)] == ["r2", "r3", "r4"]
    assert ids(a.queued()) == ["other"]
    assert ids(a.queued(["wf"])) == []
    assert a.claim([], 10) == []
    assert a.claim(["other"], 0) == []


def test_awaiting_others_reads_the_oldest_queued_runs_of_other_workflows_only(
    shared_store: SharedStores,
) -> None:
    a, b = shared_store.open(), shared_store.open()
    for n in (2, 0, 1):
        a.create(rec(f"x{n}", workflow_id="x", created_at=10.0 + n), hold=False)
    a.create(rec("y0", workflow_id="y", created_at=5.0), hold=False)
    a.create(rec("w0", created_at=1.0), hold=False)  # of "wf": asked for, so left out
    a.create(rec("held", workflow_id="x", created_at=0.5))  # held: not waiting
    assert b.awaiting_others(["wf"], 3) == [
        ("y0", "y", "pending"),
        ("x0", "x", "pending"),
        ("x1", "x", "pending"),
    ]
    assert [found[0] for found in b.awaiting_others(["wf", "y"], 10)] == ["x0", "x1", "x2"]
    assert b.awaiting_others(["wf", "x", "y"], 10) == []
    assert [found[0] for found in b.awaiting_others([], 1)] == ["w0"]


def test_two_workers_claiming_at_once_never_take_the_same_run(shared_store: SharedStores) -> None:
    a, b, c = shared_store.open(), shared_store.open(), shared_store.open()
    for n in range(60):
        a.create(rec(f"r{n:02}", created_at=float(n)), hold=False)
    taken: dict[str, list[str]] = {"b": [], "c": []}
    start = threading.Barrier(2)

    def claim(name: str, store: SharedStore) -> None:
        start.wait()
        while batch := store.claim(["wf"], 3):
            taken[name].extend(claimed.record.run_id for claimed in batch)

    claimers = [threading.Thread(target=claim, args=item) for item in (("b", b), ("c", c))]
    for claimer in claimers:
        claimer.start()
    for claimer in claimers:
        claimer.join()
    assert not set(taken["b"]) & set(taken["c"])
    assert sorted(taken["b"] + taken["c"]) == [f"r{n:02}" for n in range(60)]
    assert b.held() + c.held() == 60


# --- saves of held runs ---------------------------------------------------------------


def test_the_holders_saves_are_stored_and_a_stale_one_is_no_fault(
    shared_store: SharedStores,
) -> None:
    a = shared_store.open()
    a.create(rec("r1"))
    assert save(a, rec("r1", 2, "running")).committed
    stale = save(a, rec("r1", 1, "running"))
    assert stale.committed and stale.error is None
    assert a.load("r1") == rec("r1", 2, "running")
    assert a.held() == 1


@pytest.mark.parametrize("status", ["success", "failed", "canceled", "suspended"])
def test_a_save_that_settles_a_run_releases_it(shared_store: SharedStores, status: str) -> None:
    a, b = shared_store.open(), shared_store.open()
    a.create(rec("r1"))
    assert save(a, rec("r1", 1, status)).committed
    assert a.held() == 0
    assert a.queued() == []
    assert b.claim(["wf"], 10) == []
    assert [w.held for w in b.workers() if w.worker_id == a.owner_id] == [0]


def test_a_resumed_run_nobody_holds_is_queued_and_a_worker_claims_it(
    shared_store: SharedStores,
) -> None:
    a, client, b = shared_store.open(), shared_store.open(), shared_store.open()
    a.create(rec("r1"))
    save(a, rec("r1", 1, "suspended"))
    assert client.replace(rec("r1", 2, "running"), 1)
    assert client.held() == 0
    assert ids(b.queued()) == ["r1"]
    assert [c.record for c in b.claim(["wf"], 1)] == [rec("r1", 2, "running")]


def test_a_replace_with_hold_keeps_the_run_here(shared_store: SharedStores) -> None:
    a, b = shared_store.open(), shared_store.open()
    a.create(rec("r1"))
    save(a, rec("r1", 1, "suspended"))
    assert b.replace(rec("r1", 2, "running"), 1, hold=True)
    assert b.held() == 1
    assert b.queued() == []
    assert save(b, rec("r1", 3, "running")).committed
    assert b.load("r1") == rec("r1", 3, "running")


def test_a_replace_of_a_run_a_worker_holds_fails_even_its_own(shared_store: SharedStores) -> None:
    a, b = shared_store.open(), shared_store.open()
    a.create(rec("r1"))
    save(a, rec("r1", 1, "running"))
    assert not b.replace(rec("r1", 2, "canceled"), 1)
    assert not b.replace(rec("r1", 2, "canceled"), 1, hold=True)
    assert a.load("r1") == rec("r1", 1, "running")
    # Nor may its holder: its actor drives the run. (A cancel that read the run queued
    # just before this worker claimed it ended it under the actor the claim started.)
    assert not a.replace(rec("r1", 2, "canceled"), 1)
    assert not a.replace(rec("r1", 2, "running"), 1, hold=True)
    assert a.held() == 1 and a.load("r1") == rec("r1", 1, "running")
    assert save(a, rec("r1", 2, "running")).committed


def test_a_run_put_to_sleep_is_released_and_claimable_only_once_due(
    shared_store: SharedStores,
) -> None:
    a, b = shared_store.open(), shared_store.open()
    a.create(rec("r1"))
    wake_at = time.time() + 0.6
    assert save(a, rec("r1", 1, "waiting", wake_at=wake_at)).committed
    assert a.held() == 0
    assert b.claim(["wf"], 10) == []
    assert b.queued() == []
    assert b.next_wake(["wf"]) == pytest.approx(wake_at)
    assert b.next_wake(["other"]) is None
    assert b.load("r1") == rec("r1", 1, "waiting", wake_at=wake_at)
    claimed: list[str] = []
    wait_until(lambda: claimed.extend(c.record.run_id for c in b.claim(["wf"], 10)) or claimed)
    assert claimed == ["r1"]
    assert time.time() >= wake_at - 0.05  # the database's clock, give or take
    assert b.next_wake(["wf"]) is None


def test_a_run_handed_back_is_queued_for_others_and_its_hander_may_skip_it(
    shared_store: SharedStores,
) -> None:
    a, b = shared_store.open(), shared_store.open()
    a.create(rec("r1", created_at=1.0), hold=False)
    a.create(rec("r2", created_at=2.0), hold=False)
    assert [c.record.run_id for c in a.claim(["wf"], 10)] == ["r1", "r2"]

    assert a.hand_back(["r1", "unknown"]) == 1
    assert (a.holds("r1"), a.holds("r2"), a.held()) == (False, True, 1)
    assert ids(b.queued()) == ["r1"]
    assert a.load("r1") == rec("r1", created_at=1.0)  # as it was
    assert a.claim(["wf"], 10, skip={"r1"}) == []
    assert [c.record.run_id for c in b.claim(["wf"], 10)] == ["r1"]
    # Not its own any more: a second hand-back changes nothing, the holder keeps it.
    assert a.hand_back(["r1"]) == 0
    assert b.holds("r1") and b.queued() == []
    assert save(b, rec("r1", 1, "running", created_at=1.0)).committed


def test_a_skipped_run_whose_cancel_was_asked_for_is_claimed_to_end(
    shared_store: SharedStores,
) -> None:
    a = shared_store.open()
    a.create(rec("r1"), hold=False)
    assert len(a.claim(["wf"], 10)) == 1
    assert a.request_cancel("r1")
    assert a.hand_back(["r1"]) == 1
    claimed = a.claim(["wf"], 10, skip={"r1"})
    assert [(c.record.run_id, c.cancel_requested) for c in claimed] == [("r1", True)]


@pytest.mark.parametrize("queued", [False, True], ids=["no-queue", "through-a-queue"])
def test_a_claim_leaves_busy_runs_even_those_whose_cancel_was_asked_for(
    shared_store: SharedStores, queued: bool
) -> None:
    a = shared_store.open()
    if queued:  # claimed by rank, under the queues' limits
        a.define_queue(QueueLimits("q", concurrency=5))
    for run_id in ("r1", "r2", "r3"):
        record = rec(run_id)
        a.create(record._replace(queue="q") if queued else record, hold=False)
    assert a.request_cancel("r1")

    claimed = a.claim(["wf"], 10, skip={"r1", "r2"}, busy={"r1", "r3"})

    assert claimed == []  # r2 is skipped; r1 and r3 are busy, the cancel of r1 or not
    assert sorted(c.record.run_id for c in a.claim(["wf"], 10, busy={"r3"})) == ["r1", "r2"]


def test_a_claim_that_finds_a_run_it_thought_it_held_in_the_queue_hands_it_back_fenced(
    shared_store: SharedStores,
) -> None:
    stalled, b = shared_store.open(lease=LEASE), shared_store.open()
    stalled.create(rec("r1"))
    save(stalled, rec("r1", 1, "running"))
    assert reaped(b) == 1
    assert stalled.held() == 1  # by its own count: it has not heard yet

    # Its actor of r1 may still be in a step: a second one must not start beside it.
    assert stalled.claim(["wf"], 5) == []

    assert (stalled.held(), stalled.holds("r1")) == (0, False)
    assert ids(b.queued()) == ["r1"]
    assert isinstance(save(stalled, rec("r1", 2, "running")).error, RunFencedError)
    # Once that actor let go, r1 is claimed as any run, here or elsewhere.
    assert [c.record for c in stalled.claim(["wf"], 5)] == [rec("r1", 1, "running")]
    assert save(stalled, rec("r1", 2, "success")).committed


def test_a_run_put_to_sleep_due_and_claimed_in_one_batch_is_claimed_not_fenced(
    shared_store: SharedStores,
) -> None:
    # The save that lets go of the run, and a claim behind it in the same batch (one
    # transaction on SQLite): the claim found the run "held" by the store's count from
    # before the batch, and handed it back fenced off, as one lost while stalled.
    a = shared_store.open()
    a.create(rec("mine"))
    a.create(rec("r1"))
    a.create(rec("r2", created_at=2e9), hold=False)  # queued: the claim is made, not read away
    stopped, go_on = stall_writer(a)
    first, asleep = Outcome(), Outcome()
    claimed: list[list[str]] = []
    claim = threading.Thread(
        target=lambda: claimed.append(sorted(c.record.run_id for c in a.claim(["wf"], 5)))
    )
    with capture_logs() as logs:
        a.save([rec("mine", 1, "running")], on_commit=first.commit, on_error=first.fail)
        try:
            assert stopped.wait(10)
            due = rec("r1", 1, "waiting", wake_at=time.time() - 1)
            a.save([due], on_commit=asleep.commit, on_error=asleep.fail)
            claim.start()
            time.sleep(0.2)  # the claim waits behind the save
        finally:
            go_on.set()
        claim.join(10)
        assert asleep.wait().committed

    assert claimed == [["r1", "r2"]] and a.holds("r1")
    said = [log["event"] for log in logs]
    assert "run_fenced" not in said and "runs_lost_while_stalled" not in said


@pytest.mark.postgres
def test_a_claim_cut_off_before_it_hands_back_a_run_it_took_adopts_the_run_later(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On PostgreSQL a lone claim commits by itself, and the hand-back of a run this worker
    # thought it held is a statement after it: cut off in between, the run stayed this
    # worker's at the new epoch, while the store knew it at the old one and so never
    # adopted it. Nobody drove the run, and nobody reaped it while the worker lived.
    import psycopg

    from runtime._stores.postgres import PostgresStore

    stores = SharedStores(postgres_url, hears_others=True)
    try:
        stalled, b = stores.open(lease=LEASE), stores.open()
        stalled.create(rec("r1"))
        assert reaped(b) == 1  # back in the queue; stalled has not heard
        retaken = PostgresStore._retaken
        cuts: list[str] = []

        def cut_once(self: Any, connection: Any, rows: Any, batch: Any) -> Any:
            if not cuts:
                cuts.append("cut")
                raise psycopg.OperationalError("the connection was cut (injected)")
            return retaken(self, connection, rows, batch)

        monkeypatch.setattr(PostgresStore, "_retaken", cut_once)

        claimed = [c.record.run_id for c in stalled.claim(["wf"], 5)]

        assert cuts == ["cut"]
        # Taken again by the retried claim, at an epoch it knows: its to drive now.
        assert claimed == ["r1"] and stalled.holds("r1")
        assert save(stalled, rec("r1", 1, "running")).committed
    finally:
        stores.close()


def test_next_wake_leaves_out_skipped_sleepers(shared_store: SharedStores) -> None:
    a = shared_store.open()
    a.create(rec("r1"))
    wake_at = time.time() - 1  # due
    assert save(a, rec("r1", 1, "waiting", wake_at=wake_at)).committed
    assert a.next_wake(["wf"]) == pytest.approx(wake_at)
    assert a.next_wake(["wf"], skip={"r1"}) is None
    assert a.claim(["wf"], 10, skip={"r1"}) == []


def test_a_handed_back_run_holds_no_place_in_its_queue_and_has_not_started(
    shared_store: SharedStores,
) -> None:
    a, b = shared_store.open(), shared_store.open()
    a.define_queue(QueueLimits("q", concurrency=1, rate_count=1, rate_period=3600.0))
    a.create(rec("r1", created_at=1.0)._replace(queue="q"), hold=False)
    a.create(rec("r2", created_at=2.0)._replace(queue="q"), hold=False)
    assert [c.record.run_id for c in a.claim(["wf"], 10)] == ["r1"]  # one place
    assert b.claim(["wf"], 10) == []
    assert a.hand_back(["r1"]) == 1
    [stats] = b.queue_stats()
    assert (stats.waiting, stats.running) == (2, 0)
    # Its place, and its start in the rate window (one an hour), are free again.
    assert [c.record.run_id for c in b.claim(["wf"], 10, skip={"r1"})] == ["r2"]


def test_a_save_of_a_run_nobody_holds_applies(shared_store: SharedStores) -> None:
    a, b = shared_store.open(), shared_store.open()
    a.create(rec("r1"), hold=False)
    assert save(b, rec("r1", 1, "running")).committed
    assert b.load("r1") == rec("r1", 1, "running")
    assert ids(a.queued()) == ["r1"]


def test_a_save_of_a_run_another_worker_holds_is_fenced(shared_store: SharedStores) -> None:
    a, b = shared_store.open(), shared_store.open()
    a.create(rec("r1"))
    outcome = save(b, rec("r1", 1, "failed"))
    assert not outcome.committed
    assert isinstance(outcome.error, RunFencedError)
    assert outcome.error.run_id == "r1"
    assert a.load("r1") == rec("r1")


def test_the_other_records_of_a_fenced_save_are_stored(shared_store: SharedStores) -> None:
    a, b = shared_store.open(), shared_store.open()
    a.create(rec("theirs"))
    b.create(rec("mine"))
    outcome = save(b, rec("mine", 1, "running"), rec("theirs", 1, "running"))
    assert isinstance(outcome.error, RunFencedError)
    assert b.load("mine") == rec("mine", 1, "running")
    assert b.load("theirs") == rec("theirs")


# --- leases, reaping, fencing -------------------------------------------------------------


def queued_saves(store: SharedStore, *records: SnapshotRecord) -> list[Outcome]:
    """Save a record of run ``mine``, then, while the writer is at it, each of these.

    Those are committed in one batch after the first. Returns every save's outcome.
    """
    stopped, go_on = stall_writer(store)
    outcomes = [Outcome() for _ in range(len(records) + 1)]
    first, *rest = outcomes
    store.save([rec("mine", 1, "running")], on_commit=first.commit, on_error=first.fail)
    try:
        assert stopped.wait(10)
        for record, outcome in zip(records, rest, strict=True):
            store.save([record], on_commit=outcome.commit, on_error=outcome.fail)
    finally:
        go_on.set()
    return [outcome.wait() for outcome in outcomes]


def test_saves_of_a_run_in_one_batch_are_each_committed_and_the_newest_stored(
    shared_store: SharedStores,
) -> None:
    a = shared_store.open()
    a.create(rec("mine"))
    a.create(rec("r1"))
    outcomes = queued_saves(
        a, rec("r1", 1, "running"), rec("r1", 3, "running"), rec("r1", 2, "running")
    )
    assert [outcome.committed for outcome in outcomes] == [True] * 4
    assert a.load("r1") == rec("r1", 3, "running")
    assert save(a, rec("r1", 4, "success")).committed
    assert a.load("r1") == rec("r1", 4, "success")


def test_every_save_of_a_fenced_run_in_one_batch_is_fenced(shared_store: SharedStores) -> None:
    stalled, b = shared_store.open(lease=LEASE), shared_store.open()
    stalled.create(rec("mine"))
    stalled.create(rec("r1"))
    assert reaped(b, 2) == 2
    b.claim(["wf"], 2)
    # The batch before them (of another run b took too) did not tell this worker
    # that r1 is fenced: the batch of r1's saves finds it out.
    outcomes = queued_saves(stalled, rec("r1", 1, "running"), rec("r1", 2, "running"))
    assert [type(outcome.error) for outcome in outcomes] == [RunFencedError] * 3
    assert b.load("r1") == rec("r1")


def test_a_stalled_workers_runs_go_back_to_the_queue_and_its_writes_are_fenced(
    shared_store: SharedStores,
) -> None:
    stalled, b = shared_store.open(lease=LEASE), shared_store.open()
    stalled.create(rec("r1"))
    save(stalled, rec("r1", 1, "running"))
    assert reaped(b) == 1
    assert ids(b.queued()) == ["r1"]
    # Nobody holds the run now, and the stalled worker still may not write it.
    late = save(stalled, rec("r1", 2, "running"))
    assert isinstance(late.error, RunFencedError) and not late.committed
    assert [c.record for c in b.claim(["wf"], 1)] == [rec("r1", 1, "running")]
    again = save(stalled, rec("r1", 2, "success"))
    assert isinstance(again.error, RunFencedError)
    assert stalled.held() == 0
    assert b.load("r1") == rec("r1", 1, "running")
    assert save(b, rec("r1", 2, "success")).committed
    assert b.load("r1") == rec("r1", 2, "success")


def test_a_claim_bumps_the_epoch_so_the_old_holder_is_fenced_at_its_next_save(
    shared_store: SharedStores,
) -> None:
    stalled, b = shared_store.open(lease=LEASE), shared_store.open()
    stalled.create(rec("r1"))
    reaped(b)
    b.claim(["wf"], 1)
    assert stalled.held() == 1  # by its own count: it has not heard yet
    outcome = save(stalled, rec("r1", 1, "running"))
    assert isinstance(outcome.error, RunFencedError)
    assert stalled.held() == 0


def test_heartbeat_says_false_once_after_being_reaped_and_the_worker_is_back(
    shared_store: SharedStores,
) -> None:
    stalled, b = shared_store.open(lease=LEASE), shared_store.open()
    stalled.create(rec("r1"))
    stalled.create(rec("r2"))
    assert reaped(b, 2) == 2
    assert stalled.owner_id not in [w.worker_id for w in b.workers()]
    assert stalled.heartbeat() is False
    assert stalled.held() == 0  # what it held is fenced off
    assert stalled.heartbeat() is True
    assert stalled.owner_id in [w.worker_id for w in b.workers()]
    assert isinstance(save(stalled, rec("r1", 1, "running")).error, RunFencedError)
    # Claimed again, a run is this worker's once more.
    assert sorted(c.record.run_id for c in stalled.claim(["wf"], 5)) == ["r1", "r2"]
    assert save(stalled, rec("r1", 1, "running")).committed


def test_a_reaped_worker_that_joins_again_still_hears_it_from_heartbeat(
    shared_store: SharedStores,
) -> None:
    stalled, b = shared_store.open(lease=LEASE), shared_store.open()
    stalled.create(rec("r1"))
    reaped(b)
    stalled.join(role="worker", workflows=["wf"], concurrency=2)
    assert stalled.heartbeat() is False
    assert stalled.heartbeat() is True
    assert isinstance(save(stalled, rec("r1", 1, "running")).error, RunFencedError)


def test_a_worker_that_heartbeats_keeps_its_runs(shared_store: SharedStores) -> None:
    alive, b = shared_store.open(lease=LEASE), shared_store.open()
    alive.create(rec("r1"))
    deadline = time.monotonic() + 3 * LEASE
    while time.monotonic() < deadline:
        assert alive.heartbeat() is True
        assert b.reap() == 0
        time.sleep(LEASE / 5)
    assert b.claim(["wf"], 1) == []
    assert save(alive, rec("r1", 1, "running")).committed


def test_each_worker_is_judged_by_its_own_lease(shared_store: SharedStores) -> None:
    short, long, reaper = (
        shared_store.open(lease=LEASE),
        shared_store.open(lease=60.0),
        shared_store.open(),
    )
    short.create(rec("s1"))
    long.create(rec("l1"))
    assert reaped(reaper) == 1
    time.sleep(LEASE)
    assert reaper.reap() == 0
    assert ids(reaper.queued()) == ["s1"]
    assert {w.worker_id for w in reaper.workers()} == {long.owner_id, reaper.owner_id}


def test_a_closed_worker_hands_its_runs_back_at_once(shared_store: SharedStores) -> None:
    a, b = shared_store.open(), shared_store.open()
    a.create(rec("r1"))
    a.create(rec("r2"))
    save(a, rec("r2", 1, "success"))
    a.close()
    assert ids(b.queued()) == ["r1"]
    assert a.owner_id not in [w.worker_id for w in b.workers()]
    assert a.load("r2") == rec("r2", 1, "success")  # still readable


# --- cancels --------------------------------------------------------------------------


def test_a_cancel_request_reaches_the_holder(shared_store: SharedStores) -> None:
    holder, client = shared_store.open(), shared_store.open()
    holder.create(rec("r1"))
    holder.create(rec("r2"))
    holder.create(rec("ended"))
    save(holder, rec("ended", 1, "success"))
    assert holder.cancel_requests() == []
    assert client.request_cancel("r1")
    assert not client.request_cancel("ended")
    assert not client.request_cancel("nobody")
    # Asked for already: of two cancels from elsewhere, only the first is told it asked
    # (both were, and both cancel() calls returned True).
    assert not shared_store.open().request_cancel("r1")
    assert holder.cancel_requests() == ["r1"]
    assert client.cancel_requests() == []
    save(holder, rec("r1", 1, "canceled"))
    assert holder.cancel_requests() == []


def test_a_claimed_run_says_whether_a_cancel_waits_for_it(shared_store: SharedStores) -> None:
    client, worker = shared_store.open(), shared_store.open()
    client.create(rec("r1", created_at=1.0), hold=False)
    client.create(rec("r2", created_at=2.0), hold=False)
    assert client.request_cancel("r2")
    claimed = worker.claim(["wf"], 10)
    assert [(c.record.run_id, c.cancel_requested) for c in claimed] == [
        ("r1", False),
        ("r2", True),
    ]


# --- resume requests ------------------------------------------------------------------


def _request(store: SharedStore, run_id: str, path: str, seq: int, data: bytes = b"d") -> str:
    """Ask for the resume of ``path``, read waiting in the run's record ``seq``."""
    return store.request_resume(run_id, path, data, seq=seq, created_at=rec(run_id).created_at)


def _running(store: SharedStore, run_id: str, seq: int = 1) -> None:
    """A run created held by ``store``, and running at ``seq``."""
    assert store.create(rec(run_id))
    save(store, rec(run_id, seq, "running"))


def test_of_two_resume_requests_of_one_suspension_the_first_is_recorded(
    shared_store: SharedStores,
) -> None:
    holder, client, other = shared_store.open(), shared_store.open(), shared_store.open()
    _running(holder, "r1")
    assert _request(client, "r1", "ask[1]", 1) == "recorded"
    assert _request(other, "r1", "ask[1]", 1, b"late") == "requested"  # the first won
    assert _request(other, "r1", "ask[0]", 1) == "recorded"  # another suspension: its own
    assert client.resume_pending("r1") and not client.resume_pending("r2")
    # The holder sees them (its run actor carries them out); a worker that does not hold
    # the running run does not.
    found = holder.resume_requests()
    assert [(r.run_id, r.path, r.data, r.status, r.held) for r in found] == [
        ("r1", "ask[1]", b"d", "running", True),
        ("r1", "ask[0]", b"d", "running", True),
    ]
    assert found[0].request_id != found[1].request_id
    assert client.resume_requests() == []


def test_a_resume_request_is_refused_once_a_suspension_was_resumed_since_or_the_run_ended(
    shared_store: SharedStores,
) -> None:
    holder, client = shared_store.open(), shared_store.open()
    _running(holder, "r1")
    assert _request(client, "r1", "ask[0]", 1) == "recorded"
    # The holder's run actor took it: the record that resumes it carries the request out.
    save(holder, rec("r1", 2, "running")._replace(taken=("ask[0]",)))
    assert not client.resume_pending("r1")
    assert holder.resume_requests() == []
    # A resume read before that record may name a suspension it took: refused, read again.
    assert _request(client, "r1", "ask[1]", 1) == "changed"
    assert _request(client, "r1", "ask[1]", 2) == "recorded"
    save(holder, rec("r1", 3, "running"))  # a record that resumes nothing changes nothing
    assert _request(client, "r1", "ask[2]", 2) == "recorded"
    save(holder, rec("r1", 4, "failed"))  # ended: no resume any more
    assert _request(client, "r1", "ask[3]", 4) == "changed"
    assert _request(client, "nobody", "ask[0]", 0) == "changed"
    # Those left when the run ended are the workers' to drop (nothing carries them out).
    left = client.resume_requests()
    assert [(r.path, r.status, r.held) for r in left] == [
        ("ask[1]", "failed", False),
        ("ask[2]", "failed", False),
    ]
    client.drop_resume_request(left[0]._replace(request_id="another"))  # not that one
    for request in left:
        client.drop_resume_request(request)
    wait_until(lambda: not client.resume_pending("r1"), what="the requests dropped")


def test_a_resume_of_a_suspended_run_is_refused_while_a_request_of_that_suspension_waits(
    shared_store: SharedStores,
) -> None:
    holder, client = shared_store.open(), shared_store.open()
    for run_id in ("r1", "r2"):
        _running(holder, run_id)
        assert _request(client, run_id, "ask[0]", 1) == "recorded"
        # The run suspended before its worker took the request: a resume's compare-and-set.
        save(holder, rec(run_id, 2, "suspended"))
    assert [(r.run_id, r.status) for r in client.resume_requests()] == [
        ("r1", "suspended"),
        ("r2", "suspended"),
    ]
    resuming = rec("r1", 3, "running")._replace(taken=("ask[0]",))
    assert not client.replace(resuming, 2)  # the request came first
    [request, _] = client.resume_requests()
    assert client.replace(resuming, 2, requested=request.request_id)  # it carries it out
    assert not client.resume_pending("r1")
    assert _request(client, "r1", "ask[1]", 2) == "changed"  # any compare-and-set changes it
    # A resume of another suspension goes ahead; the request waits for the worker.
    assert client.replace(rec("r2", 3, "running")._replace(taken=("ask[1]",)), 2)
    assert client.resume_pending("r2")
    claimed = holder.claim(["wf"], 10)
    assert [c.record.run_id for c in claimed] == ["r1", "r2"]
    assert [(r.run_id, r.path, r.held) for r in holder.resume_requests()] == [
        ("r2", "ask[0]", True)
    ]


def test_a_resume_that_carries_out_a_request_applies_only_while_that_very_request_waits(
    shared_store: SharedStores,
) -> None:
    # Two workers read one request of a suspended run; the first carried it out, the
    # step suspended again at that path. The second's resume (of the same record it
    # read there) must not apply the old request's data to the new suspension.
    holder, client, late = shared_store.open(), shared_store.open(), shared_store.open()
    _running(holder, "r1")
    assert _request(client, "r1", "ask[0]", 1) == "recorded"
    save(holder, rec("r1", 2, "suspended"))
    [first] = late.resume_requests()
    resuming = rec("r1", 3, "running")._replace(taken=("ask[0]",))
    assert not client.replace(resuming, 2, requested="another")  # not the request that waits
    other_path = rec("r1", 3, "running")._replace(taken=("ask[1]",))
    assert not client.replace(other_path, 2, requested=first.request_id)  # not its path
    assert client.replace(resuming, 2, requested=first.request_id)
    assert not client.resume_pending("r1")
    # The run goes on and suspends at ask[0] again, which another request asks for.
    assert [c.record.run_id for c in holder.claim(["wf"], 10)] == ["r1"]
    save(holder, rec("r1", 4, "running"))
    assert _request(client, "r1", "ask[0]", 4, b"second") == "recorded"
    save(holder, rec("r1", 5, "suspended"))
    [second] = client.resume_requests()
    assert second.request_id != first.request_id
    again = rec("r1", 6, "running")._replace(taken=("ask[0]",))
    assert not late.replace(again, 5, requested=first.request_id)  # carried out already
    assert client.resume_pending("r1")  # and the one that waits is left alone
    record = client.load("r1")
    assert record is not None and record.seq == 5
    assert late.replace(again, 5, requested=second.request_id)
    assert not client.resume_pending("r1")


def test_a_look_at_resume_requests_is_not_crowded_out_by_those_no_worker_here_can_take(
    shared_store: SharedStores, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A look reads at most RESUME_REQUESTS_READ, the oldest first. Requests of suspended
    # runs of a workflow this worker does not register (its workers gone) filled it,
    # look after look, and those of the runs this worker holds were never read: their
    # actors never took them, and the waits on those runs waited on.
    import runtime._stores.postgres as postgres_module
    import runtime._stores.sqlite as sqlite_module

    for module in (sqlite_module, postgres_module):
        monkeypatch.setattr(module, "RESUME_REQUESTS_READ", 3)
    holder, client = shared_store.open(), shared_store.open()
    for n in range(4):
        run_id = f"other{n}"
        assert holder.create(rec(run_id, workflow_id="retired"))
        save(holder, rec(run_id, 1, "running", workflow_id="retired"))
        assert _request(client, run_id, "ask[0]", 1) == "recorded"
        save(holder, rec(run_id, 2, "suspended", workflow_id="retired"))
    _running(holder, "mine")
    assert _request(client, "mine", "ask[0]", 1) == "recorded"
    _running(holder, "ended")
    assert _request(client, "ended", "ask[0]", 1) == "recorded"
    save(holder, rec("ended", 2, "failed"))
    found = holder.resume_requests(["wf"])
    assert [(r.run_id, r.held) for r in found] == [("mine", True), ("ended", False)]
    # A worker that registers the workflow reads those of its suspended runs, oldest first.
    assert [r.run_id for r in client.resume_requests(["retired"])] == [
        f"other{n}" for n in range(3)
    ]


def test_a_restart_and_a_delete_drop_the_resume_requests_of_the_run(
    shared_store: SharedStores,
) -> None:
    a = shared_store.open()
    for run_id in ("r1", "r2"):
        _running(a, run_id)
        assert _request(a, run_id, "ask[0]", 1) == "recorded"
        save(a, rec(run_id, 2, "failed"))
    assert a.replace(rec("r1", 3, "running"), 2, reopen=True)
    assert not a.resume_pending("r1")
    assert a.delete("r2")
    assert not a.resume_pending("r2")
    assert a.resume_requests() == []


def test_a_resume_request_hints_its_store_and_the_others(shared_store: SharedStores) -> None:
    a, b = shared_store.open(), shared_store.open()
    own: list[tuple[str, str]] = []
    heard: list[tuple[str, str]] = []
    a.set_hint(lambda kind, run_id: own.append((kind, run_id)))
    b.set_hint(lambda kind, run_id: heard.append((kind, run_id)))
    _running(b, "r1")
    if shared_store.hears_others:
        # The listener connects in the background: ask until it hears.
        n = 0

        def hears() -> bool:
            nonlocal n
            n += 1
            assert _request(a, "r1", f"ask[{n}]", 1) == "recorded"
            time.sleep(0.05)
            return ("resume", "r1") in heard

        wait_until(hears, timeout=10, what="a resume hint")
    else:
        assert _request(a, "r1", "ask[0]", 1) == "recorded"
    assert ("resume", "r1") in own


# --- workers and reads ----------------------------------------------------------------


def test_workers_lists_each_worker_with_its_heartbeat_age_and_runs_held(
    shared_store: SharedStores,
) -> None:
    a, b = shared_store.open(), shared_store.open(lease=30.0)
    a.join(role="worker", workflows=["wf", "other"], concurrency=4)
    b.join(role="client", workflows=[], concurrency=None)
    a.create(rec("r1"))
    a.create(rec("r2"))
    b.create(rec("q1"), hold=False)
    found = {w.worker_id: w for w in b.workers()}
    assert set(found) == {a.owner_id, b.owner_id}
    wa, wb = found[a.owner_id], found[b.owner_id]
    assert (wa.role, wa.workflows, wa.concurrency, wa.held) == ("worker", ("other", "wf"), 4, 2)
    assert (wb.role, wb.workflows, wb.concurrency, wb.held) == ("client", (), None, 0)
    assert 0 <= wa.heartbeat_age < 5
    assert wa.pid > 0 and wa.host
    assert abs(wa.started_at - time.time()) < 60
    time.sleep(0.3)
    before = {w.worker_id: w.heartbeat_age for w in a.workers()}
    assert a.heartbeat()
    after = {w.worker_id: w.heartbeat_age for w in a.workers()}
    assert after[a.owner_id] < before[a.owner_id]
    assert after[b.owner_id] >= before[b.owner_id]
    # Each with its own lease: one past it without a heartbeat is shown expired.
    assert wb.lease == 30.0 and wa.lease == a.lease
    assert not wa.expired and wa._replace(heartbeat_age=a.lease + 1).expired


def test_load_many_returns_the_runs_it_knows(shared_store: SharedStores) -> None:
    a = shared_store.open()
    a.create(rec("r1"))
    a.create(rec("r2"))
    save(a, rec("r2", 1, "running"))
    found = sorted(a.load_many(["r2", "nobody", "r1"]))
    assert found == [rec("r1"), rec("r2", 1, "running")]
    assert a.load_many([]) == []


def test_seqs_reads_the_newest_seq_of_the_runs_it_knows(shared_store: SharedStores) -> None:
    a, b = shared_store.open(), shared_store.open()
    a.create(rec("r1"))
    a.create(rec("r2"))
    save(a, rec("r2", 1, "running"), rec("r2", 2, "running"))
    assert b.seqs(["r2", "nobody", "r1"]) == {"r1": 0, "r2": 2}
    assert b.seqs([]) == {}
    many = [f"m{n}" for n in range(600)]  # more than one statement's worth on SQLite
    for run_id in many:
        a.create(rec(run_id), hold=False)
    assert b.seqs([*many, "nobody"]) == dict.fromkeys(many, 0)


class LoadsSeen:
    """Hands every call on to ``inner``, noting which runs ``load_many`` was asked for."""

    def __init__(self, inner: SharedStore) -> None:
        self._inner = inner
        self.loaded: list[str] = []
        self.asked: list[list[str]] = []  # the runs of each seqs() read

    def seqs(self, run_ids: list[str]) -> dict[str, int]:
        self.asked.append(sorted(run_ids))
        return self._inner.seqs(run_ids)

    def load_many(self, run_ids: list[str]) -> list[SnapshotRecord]:
        self.loaded.extend(run_ids)
        return self._inner.load_many(run_ids)

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)


def test_the_store_watcher_loads_only_the_runs_whose_seq_moved(
    shared_store: SharedStores,
) -> None:
    """A process waiting on thousands of runs others drive reads their seqs, not their records.

    Records may be large, and most runs waited on (asleep, suspended, on a long step)
    do not change between two reads: loading them all at every read cost a process that
    waited on 5,000 sleeping runs most of a core.
    """
    a, other = shared_store.open(), shared_store.open()
    for run_id in ("still", "moves", "deleted"):
        a.create(rec(run_id), hold=False)
    save(a, rec("deleted", 1, "success"))  # only a run that has ended can be deleted
    seen = LoadsSeen(a)
    delivered: list[tuple[str, int | None]] = []
    watcher = StoreWatcher(
        seen,  # type: ignore[arg-type]
        lambda run_id, record: delivered.append((run_id, None if record is None else record.seq)),
        interval=0.01,
    )
    try:
        watcher.add("still", 0)
        watcher.add("moves", 0)
        watcher.add("deleted", 1)
        watcher.add("never-recorded", -1)
        wait_until(lambda: ("never-recorded", None) in delivered)
        time.sleep(0.2)  # twenty reads or so
        assert delivered == [("never-recorded", None)]
        assert seen.loaded == []
        save(other, rec("moves", 1, "running"))
        assert other.delete("deleted")
        wait_until(lambda: len(delivered) == 3)
        assert sorted(delivered[1:], key=str) == [("deleted", None), ("moves", 1)]
        time.sleep(0.2)
        assert len(delivered) == 3  # each change reported once
        assert "still" not in seen.loaded and seen.loaded.count("moves") == 1
    finally:
        watcher.stop(5)


def test_a_hint_naming_a_run_has_the_watcher_read_that_run_alone(
    shared_store: SharedStores,
) -> None:
    """Between its reads of every run, a hint has the watcher read only the run it names.

    Runs ending elsewhere send hints in a steady stream (a batch every 50 ms or so); each
    used to read every run waited on here, thousands of them.
    """
    a = shared_store.open()
    for run_id in ("moves", "still"):
        a.create(rec(run_id), hold=False)
    seen = LoadsSeen(a)
    delivered: list[tuple[str, int | None]] = []
    watcher = StoreWatcher(
        seen,  # type: ignore[arg-type]
        lambda run_id, record: delivered.append((run_id, None if record is None else record.seq)),
        interval=30.0,  # no read of them all during the test
    )
    try:
        watcher.add("moves", 0)
        watcher.add("still", 0)
        watcher.poke("settled", "somebody-else's")  # not waited on here: nothing is read
        save(a, rec("moves", 1, "running"))
        watcher.poke("settled", "moves")
        wait_until(lambda: delivered)
        assert delivered == [("moves", 1)]
        assert seen.asked == [["moves"]]
        watcher.poke()  # a hint that names no run: every run is read
        wait_until(lambda: len(seen.asked) == 2)
        assert seen.asked[1] == ["moves", "still"]
        assert delivered == [("moves", 1)]
    finally:
        watcher.stop(5)


class GoesDown(LoadsSeen):
    """A store whose reads fail while ``down`` is set, as while its database restarts."""

    down = False

    def seqs(self, run_ids: list[str]) -> dict[str, int]:
        if self.down:
            raise StoreError("cannot read the store: the database is down")
        return super().seqs(run_ids)


def test_the_store_watcher_pauses_after_a_failed_read_and_goes_on(
    shared_store: SharedStores,
) -> None:
    a = shared_store.open()
    a.create(rec("r"), hold=False)
    store = GoesDown(a)
    store.down = True
    delivered: list[SnapshotRecord | None] = []
    watcher = StoreWatcher(
        store,  # type: ignore[arg-type]
        lambda _run_id, record: delivered.append(record),
        interval=0.01,
    )
    try:
        with capture_logs() as logs:
            watcher.add("r", 0)
            for _ in range(25):  # fifty reads' worth at the interval, and hints meanwhile
                time.sleep(0.02)
                watcher.poke("", "r")
            failed = [log for log in logs if log["event"] == "store_watch_failed"]
            # One warning while the store is down, not one a read (a hint's included).
            assert len(failed) == 1, logs
            assert "the database is down" in failed[0]["error"]
            store.down = False
            save(a, rec("r", 1, "running"))
            wait_until(lambda: delivered)  # back to reading once the pause is over
        assert [record.seq for record in delivered if record is not None] == [1]
        [recovered] = [log for log in logs if log["event"] == "store_watch_recovered"]
        assert recovered["failed_passes"] >= 1
        assert [log["event"] for log in logs if log["event"] == "store_watch_failed"] == [
            "store_watch_failed"
        ]
    finally:
        watcher.stop(5)


def test_queued_lists_runs_nobody_holds_oldest_first(shared_store: SharedStores) -> None:
    a = shared_store.open()
    a.create(rec("held", created_at=0.0))
    a.create(rec("late", created_at=3.0), hold=False)
    a.create(rec("early", created_at=1.0), hold=False)
    a.create(rec("x", workflow_id="other", created_at=2.0), hold=False)
    a.create(rec("parked", created_at=0.5), hold=False)
    save(a, rec("parked", 1, "suspended", created_at=0.5))
    assert ids(a.queued()) == ["early", "x", "late"]
    assert ids(a.queued(["wf"])) == ["early", "late"]


# --- hints ----------------------------------------------------------------------------


def test_other_workers_hear_hints_of_queued_settled_and_cancelled_runs(
    shared_store: SharedStores,
) -> None:
    a, b = shared_store.open(), shared_store.open()
    if not shared_store.hears_others:
        # SQLite: a store's hints reach its own callback only; others poll.
        own_only: list[tuple[str, str]] = []
        heard_here: list[tuple[str, str]] = []
        a.set_hint(lambda kind, run_id: own_only.append((kind, run_id)))
        b.set_hint(lambda kind, run_id: heard_here.append((kind, run_id)))
        a.create(rec("r0"), hold=False)
        assert own_only == [("queued", "r0")]
        time.sleep(0.3)
        assert heard_here == []
        return
    heard: list[tuple[str, str]] = []
    own: list[tuple[str, str]] = []
    b.set_hint(lambda kind, run_id: heard.append((kind, run_id)))
    a.set_hint(lambda kind, run_id: own.append((kind, run_id)))

    def hears(hint: tuple[str, str]) -> Callable[[], bool]:
        return lambda: hint in heard

    # The listener connects in the background: hint until it hears.
    n = 0

    def queued() -> bool:
        nonlocal n
        n += 1
        a.create(rec(f"warm{n}"), hold=False)
        time.sleep(0.05)
        return ("queued", f"warm{n}") in heard

    wait_until(queued, timeout=10, what="a first hint")
    a.create(rec("r1"))
    assert a.request_cancel("r1")
    wait_until(hears(("cancel", "r1")))
    save(a, rec("r1", 1, "waiting", wake_at=time.time() + 60))
    wait_until(hears(("queued", "r1")))
    a.claim(["wf"], 100)  # the warm-up runs
    a.create(rec("r2"))
    save(a, rec("r2", 1, "success"))
    wait_until(hears(("settled", "r2")))
    # A store's own hints reach its own callback once, from its writer, not by NOTIFY.
    assert ("cancel", "r1") in own and ("settled", "r2") in own
    assert len(own) == len(set(own))
    b.set_hint(None)
    heard.clear()
    a.create(rec("r3"), hold=False)
    time.sleep(0.3)
    assert heard == []


def _held_until_canceled(entered: threading.Event, go: threading.Event | None = None) -> Any:
    """A workflow whose one step sets ``entered`` and waits for its cancel (unless ``go``)."""

    def held(ctx: Any) -> Any:
        entered.set()
        if go is None or not go.is_set():
            ctx.abort_signal.wait(30)
        return ctx.input_data

    return (
        create_workflow(id="holding", input_schema=Value, output_schema=Value)
        .then(create_step(id="held", input_schema=Value, output_schema=Value, execute=held))
        .commit()
    )


def test_of_two_cancels_from_clients_of_a_run_a_worker_holds_one_returns_true(
    each_shared_store: str,
) -> None:
    # Both returned True: each asked for the cancel, and each saw the run end canceled.
    entered = threading.Event()

    flow = _held_until_canceled(entered)
    with contextlib.ExitStack() as stack:
        worker = stack.enter_context(Runtime(store=each_shared_store, role="worker"))
        worker.register(flow)
        clients = [
            stack.enter_context(Runtime(store=each_shared_store, role="client")) for _ in range(2)
        ]
        started = clients[0].register(flow).create_run().start_async(input_data={"value": "v"})
        run_id = started.run_id
        assert entered.wait(30)
        runs = [client.register(flow).create_run(run_id) for client in clients]
        answers: list[bool] = []
        threads = [threading.Thread(target=lambda r=r: answers.append(r.cancel())) for r in runs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert sorted(answers) == [False, True]
        assert runs[0].wait(timeout=30).status == "canceled"


def test_a_cancel_tried_again_after_its_first_try_gave_up_is_told_it_canceled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first try asked for the cancel and gave up waiting (CancelError); the second
    # found it asked for already, and returned False once the run ended canceled, as if
    # it had ended before the call.
    import runtime._run as run_module
    from runtime import CancelError

    entered = threading.Event()

    flow = _held_until_canceled(entered)
    path = tmp_path / "runs.db"
    with Runtime(store=path, role="worker") as worker, Runtime(store=path, role="client") as client:
        worker.register(flow)
        store = worker._host.store
        assert store is not None
        looking = threading.Event()  # the worker looks at cancel requests only once set
        real = store.cancel_requests
        monkeypatch.setattr(store, "cancel_requests", lambda: real() if looking.is_set() else [])
        run = client.register(flow).create_run()
        run.start_async(input_data={"value": "v"})
        assert entered.wait(30)
        monkeypatch.setattr(run_module, "REMOTE_CANCEL_PATIENCE", 0.3)
        with pytest.raises(CancelError):
            run.cancel()
        looking.set()
        monkeypatch.setattr(run_module, "REMOTE_CANCEL_PATIENCE", 60.0)
        assert run.cancel() is True
        assert run.wait(timeout=30).status == "canceled"


def test_a_run_canceled_from_another_process_and_restarted_runs_on(each_shared_store: str) -> None:
    # The cancel asked for stayed asked for after the run ended: the worker that took the
    # restarted run canceled it again at once.
    entered, go = threading.Event(), threading.Event()

    flow = _held_until_canceled(entered, go)
    with contextlib.ExitStack() as stack:
        worker = stack.enter_context(Runtime(store=each_shared_store, role="worker"))
        worker.register(flow)
        client = stack.enter_context(Runtime(store=each_shared_store, role="client"))
        run = client.register(flow).create_run()
        run.start_async(input_data={"value": "v"})
        assert entered.wait(30)
        assert run.cancel() is True  # asked of the worker, which holds it
        go.set()
        assert run.restart(timeout=30).status == "success"
