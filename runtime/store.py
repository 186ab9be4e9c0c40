"""Where snapshots are kept: the store interface and the in-memory store.

The registry actor is the store's writer for a run's updates; a run's first
(``pending``) record is created by ``start_async`` itself, so that the run is
recorded before the call returns. Reads may come from any thread.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import NamedTuple, Protocol

__all__ = ["MemoryStore", "SnapshotRecord", "SnapshotStore"]

_UNFINISHED_STATUSES = frozenset({"pending", "running"})


class SnapshotRecord(NamedTuple):
    """One stored snapshot: the encoded bytes and the fields queries filter on.

    A named tuple rather than a dataclass: one is built at every transition of
    every run, and a tuple is the cheapest immutable value to build.

    Attributes:
        run_id: The run's id.
        workflow_id: The run's workflow.
        seq: The snapshot's sequence number within its run; higher is newer.
        status: The run's status in this snapshot.
        data: The snapshot as encoded by :func:`runtime.snapshot.encode`.
        created_at: When the run was started (epoch seconds).
        updated_at: When this snapshot was taken (epoch seconds).
        trace_id: The run's trace id.
    """

    run_id: str
    workflow_id: str
    seq: int
    status: str
    data: bytes
    created_at: float
    updated_at: float
    trace_id: str


class SnapshotStore(Protocol):
    """What the runtime needs from a snapshot store."""

    def create(self, record: SnapshotRecord) -> bool:
        """Record a new run; return ``False`` (and change nothing) if its id is taken."""
        ...

    def save(self, records: Sequence[SnapshotRecord]) -> None:
        """Store newer snapshots of existing runs (the registry has checked the order)."""
        ...

    def load(self, run_id: str) -> SnapshotRecord | None:
        """The newest record of a run, or ``None``. Safe from any thread."""
        ...

    def unfinished(self) -> list[SnapshotRecord]:
        """The newest records of runs that are ``pending`` or ``running``."""
        ...

    def close(self) -> None:
        """Release what the store holds."""
        ...


class MemoryStore:
    """Snapshots in a dict: the default store, lost when the process ends."""

    def __init__(self) -> None:
        self._records: dict[str, SnapshotRecord] = {}
        self._create_lock = threading.Lock()

    def create(self, record: SnapshotRecord) -> bool:
        with self._create_lock:
            if record.run_id in self._records:
                return False
            self._records[record.run_id] = record
            return True

    def save(self, records: Sequence[SnapshotRecord]) -> None:
        for record in records:
            self._records[record.run_id] = record

    def load(self, run_id: str) -> SnapshotRecord | None:
        return self._records.get(run_id)

    def unfinished(self) -> list[SnapshotRecord]:
        return [
            record
            for record in list(self._records.values())
            if record.status in _UNFINISHED_STATUSES
        ]

    def close(self) -> None:
        """Nothing to release: the records stay readable."""

    def __len__(self) -> int:
        return len(self._records)
