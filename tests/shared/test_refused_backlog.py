"""Writes told at once are told so also behind more than a batch of the runs' refused saves.

While the store refuses every write, the runs' saves wait in the writer and are
tried again, a batch at a time. A start, a claim or a heartbeat queued behind
more of them than one transaction takes (``BATCH``) never made it into the
retried batch, and waited out its whole timeout there, where one queued behind
fewer was told at once. Each is told at once now, whatever waits before it;
and the saves, once the store takes writes again, all commit, once each, in the
order they were made.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Any

import pytest
from structlog.testing import capture_logs

import runtime._stores.postgres as postgres_module
import runtime._stores.sqlite as sqlite_module
from runtime import Runtime, SnapshotRecord, SQLiteStore, StoreUnavailableError
from runtime._stores._writer import GroupCommitWriter, Write, refuse_at_once, resolve
from tests._support import wait_until
from tests.shared._refusal import (
    Refusable,
    refusable_fixture,
    told_at_once,
)
from tests.shared._workflows import WORKFLOWS

WAIT = 60.0
TIMEOUT = 12.0
"""The write's timeout here (30 s by default): a write that waited for it shows."""
RUNS = 4
"""Runs whose saves wait: each gets every RUNS-th save."""
ROLE = "callboard_refused_backlog"


refusable = refusable_fixture(timeout=TIMEOUT, role=ROLE)


def _record(run_id: str, seq: int, status: str = "running") -> SnapshotRecord:
    return SnapshotRecord(
        run_id=run_id,
        workflow_id="backlog",  # registered nowhere: no worker claims these runs
        seq=seq,
        status=status,
        data=b"x",
        created_at=1_700_000_000.0,
        updated_at=1_700_000_000.0 + seq,
        trace_id="ab" * 16,
    )


def test_writes_told_at_once_are_told_so_behind_more_than_a_batch_of_refused_saves(
    refusable: Refusable, monkeypatch: pytest.MonkeyPatch
) -> None:
    with capture_logs() as logs, Runtime(store=refusable.location) as rt:
        store: Any = rt.store
        module = sqlite_module if isinstance(store, SQLiteStore) else postgres_module
        backlog = module.BATCH + 200  # more saves than one transaction takes
        wf = rt.register(WORKFLOWS["logged"])
        run_ids = [f"backlog-{index}" for index in range(RUNS)]
        for run_id in run_ids:
            assert store.create(_record(run_id, 0), hold=True)
        # A queued run, so that a claim has one to take and goes through the writer.
        assert store.create(_record("queued", 0, "pending"), hold=False)
        # Starts, heartbeats go through the writer, as a start into a queue and a beat
        # that found its row gone do (the caller's own connection is told at once anyway).
        monkeypatch.setattr(type(store), "_fast_creates", False)
        if isinstance(store, postgres_module.PostgresStore):
            monkeypatch.setattr(store, "_renewed", lambda: False)
        committed: list[int] = []
        failed: list[BaseException] = []
        lock = threading.Lock()

        def saved(number: int) -> None:
            with lock:
                committed.append(number)

        refusable.refuse(rt, True)
        try:
            for number in range(backlog):
                store.save(
                    [_record(run_ids[number % RUNS], number // RUNS + 1)],
                    on_commit=lambda number=number: saved(number),
                    on_error=failed.append,
                )
            wait_until(
                lambda: any(e["event"] == "store_write_refused" for e in logs),
                timeout=WAIT,
                what="the refusal begins",
            )
            # Each queued behind more saves than a batch: none fits in the retried one.
            told_at_once(
                "start_async",
                lambda: wf.create_run(run_id="behind").start_async(input_data={"value": "y"}),
                refusable.says,
                timeout=TIMEOUT,
            )
            told_at_once(
                "a claim",
                lambda: store.claim(["backlog"], 1),
                refusable.says,
                timeout=TIMEOUT,
            )
            error = told_at_once("a heartbeat", store.heartbeat, refusable.says, timeout=TIMEOUT)
            assert "the lease was not renewed" in str(error)
            assert committed == [] and failed == []  # the saves wait in memory
        finally:
            refusable.refuse(rt, False)
        # Every save commits, once, in the order it was made; none is dropped.
        wait_until(lambda: len(committed) >= backlog, timeout=WAIT, what="the saves commit")
        assert committed == list(range(backlog))
        assert failed == []
        last = (backlog - 1) // RUNS + 1
        for index, run_id in enumerate(run_ids):
            stored = store.load(run_id)
            assert stored is not None
            assert stored.seq == (last if index <= (backlog - 1) % RUNS else last - 1)
        # Nothing of the start was recorded, and starts go through again.
        assert wf.get_workflow_run_execution_result("behind") is None
        stored = store.load("queued")
        assert stored is not None and stored.status == "pending"  # and nothing was claimed
        assert store.heartbeat() is True


class _Refusing:
    """A store's commit and sift that refuse every write until ``refusing`` is cleared.

    A refused batch fails its starts at once and keeps its saves, as a store's do
    (``refuse_at_once``); the first batch waits for ``gate``, so that every write
    is queued before any transaction. Saves carry their number as payload.
    """

    def __init__(self) -> None:
        self.refusing = True
        self.gate = threading.Event()
        self.batches: list[list[Write]] = []
        self.committed: list[int] = []
        self.given_up: list[int] = []
        self.done = threading.Event()

    def commit(self, writes: list[Write]) -> list[Write]:
        assert self.gate.wait(WAIT)
        self.batches.append(list(writes))
        if self.refusing:
            return refuse_at_once(writes, "the test's store", "refused for the test")
        for write in writes:
            self.committed.append(write.payload)
            write.done(None, None)
        return []

    def sift(self, writes: list[Write]) -> list[Write]:
        if not self.refusing:
            return writes
        return refuse_at_once(writes, "the test's store", "refused for the test")

    def give_up(self, writes: list[Write]) -> None:
        self.given_up.extend(write.payload for write in writes)


def _writer(store: _Refusing, batch: int) -> GroupCommitWriter:
    return GroupCommitWriter(
        name="test-refusing-writer",
        commit=store.commit,
        idle=lambda _empty: None,
        give_up=store.give_up,
        finish=lambda: None,
        sift=store.sift,
        batch=batch,
        max_retry_delay=0.05,
    )


def _start(writer: GroupCommitWriter, run_id: str) -> Future[Any]:
    future: Future[Any] = Future()
    writer.submit("create", (_record(run_id, 0), True), resolve(future))
    return future


def test_the_writer_tells_the_writes_behind_a_full_retried_batch_and_keeps_the_saves_in_order() -> (
    None
):
    batch = 4
    store = _Refusing()
    writer = _writer(store, batch)
    try:
        for number in range(3 * batch):
            writer.submit("save", number, lambda _result, _error: None)
        first = _start(writer, "first")
        for number in range(3 * batch, 4 * batch):
            writer.submit("save", number, lambda _result, _error: None)
        second = _start(writer, "second")
        store.gate.set()
        for future in (first, second):
            with pytest.raises(StoreUnavailableError, match="refuses writes"):
                future.result(WAIT)
        assert store.committed == []
        store.refusing = False
        wait_until(lambda: len(store.committed) == 4 * batch, timeout=WAIT, what="the saves")
        assert store.committed == list(range(4 * batch))  # in order, each once
        assert all(len(each) <= batch for each in store.batches)  # a transaction stays a batch
    finally:
        writer.stop(WAIT)
    assert store.given_up == []


def test_a_writer_stopped_while_refused_gives_up_every_write_behind_a_full_batch_once() -> None:
    batch = 4
    store = _Refusing()
    writer = _writer(store, batch)
    for number in range(3 * batch):
        writer.submit("save", number, lambda _result, _error: None)
    store.gate.set()
    wait_until(lambda: len(store.batches) >= 2, timeout=WAIT, what="a retry")
    # The stop lies behind more writes than a batch: a writer that never took it
    # from the queue retried its batch for ever, and never ended.
    writer.stop(WAIT)
    assert not writer._thread.is_alive()
    assert store.committed == []
    assert store.given_up == list(range(3 * batch))
