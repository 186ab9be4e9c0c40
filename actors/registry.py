"""The registry: the newest snapshot of every run, in order, final once terminal."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from actors._dispatch import ThreadActor
from actors.messages import RecordFailure, SnapshotTaken, WatchRun
from runtime.model import TERMINAL_STATUSES, RunStatus, StepStatus
from runtime.snapshot import decode, encode
from runtime.store import SnapshotRecord, SnapshotStore
from runtime.tracing import emit

__all__ = ["RegistryActor"]


class RegistryActor(ThreadActor):
    """Keeps each run's newest snapshot in the store and wakes those waiting on it.

    A snapshot older than the stored one (by sequence number) never replaces
    it, and nothing replaces a terminal snapshot: a run's status never goes back.
    The registry owns a thread of its own because a durable store blocks on I/O.
    """

    def __init__(self, store: SnapshotStore) -> None:
        super().__init__()
        self._store = store
        self._waiters: dict[str, list[threading.Event]] = {}

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, SnapshotTaken):
            self._record(message.record, terminal=message.terminal)
        elif isinstance(message, WatchRun):
            self._watch(message)
        elif isinstance(message, RecordFailure):
            self._record_failure(message)
        else:
            return super().on_receive(message)
        return None

    def on_stop(self) -> None:
        # Nobody may wait for ever on a registry that has gone: wake everyone,
        # and let them read what the store holds.
        for events in self._waiters.values():
            for event in events:
                event.set()
        self._waiters.clear()

    def _record(self, record: SnapshotRecord, *, terminal: bool) -> None:
        current = self._store.load(record.run_id)
        if current is not None and (
            current.seq >= record.seq or current.status in TERMINAL_STATUSES
        ):
            emit(
                logging.DEBUG,
                "snapshot_ignored",
                run_id=record.run_id,
                seq=record.seq,
                stored_seq=current.seq,
                stored_status=current.status,
            )
            return
        self._store.save((record,))
        if terminal:
            for event in self._waiters.pop(record.run_id, ()):
                event.set()

    def _watch(self, message: WatchRun) -> None:
        current = self._store.load(message.run_id)
        if current is None or current.status in TERMINAL_STATUSES:
            message.event.set()
        else:
            self._waiters.setdefault(message.run_id, []).append(message.event)

    def _record_failure(self, message: RecordFailure) -> None:
        current = self._store.load(message.run_id)
        if current is None or current.status in TERMINAL_STATUSES:
            return
        snapshot = decode(current.data)
        now = time.time()
        for step in snapshot["steps"].values():
            if step["status"] == StepStatus.RUNNING:
                step["status"] = StepStatus.FAILED.value
                step["error"] = message.error
                step["ended_at"] = now
        snapshot["status"] = RunStatus.FAILED.value
        snapshot["error"] = message.error
        snapshot["result"] = None
        snapshot["seq"] = current.seq + 1
        snapshot["updated_at"] = now
        record = SnapshotRecord(
            run_id=current.run_id,
            workflow_id=current.workflow_id,
            seq=current.seq + 1,
            status=RunStatus.FAILED.value,
            data=encode(snapshot),
            created_at=current.created_at,
            updated_at=now,
            trace_id=current.trace_id,
        )
        self._record(record, terminal=True)
