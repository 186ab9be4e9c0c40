"""Where snapshots are kept: the store interface and the in-memory store.

The registry actor is the store's writer for a run's updates; a run's first
(``pending``) record is created by ``start_async`` itself, so that the run is
recorded before the call returns. Reads may come from any thread. The SQLite
store is in :mod:`runtime._stores.sqlite`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol, runtime_checkable

from runtime._model import TERMINAL_STATUSES, UNFINISHED_STATUSES

__all__ = [
    "MemoryStore",
    "RecoverableStore",
    "SnapshotRecord",
    "SnapshotStore",
]


class SnapshotRecord(NamedTuple):
    """One stored snapshot: the encoded bytes and the fields queries filter on.

    A named tuple rather than a dataclass: one is built at every transition of
    every run, and a tuple is the cheapest immutable value to build.

    Attributes:
        run_id: The run's id.
        workflow_id: The run's workflow.
        seq: The snapshot's sequence number within its run; higher is newer.
        status: The run's status in this snapshot.
        data: The snapshot as encoded by :func:`runtime._snapshot.encode`.
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
    """What the runtime needs from a snapshot store.

    Attributes:
        durable: Whether records outlive the process. With a durable store a
            run waits for each snapshot to be committed before its next step,
            and runs left unfinished are resumed by the next runtime.
    """

    durable: bool

    def create(self, record: SnapshotRecord) -> bool:
        """Record a new run; return ``False`` (and change nothing) if its id is taken.

        On a durable store the record is committed when this returns.
        """
        ...

    def save(
        self, records: Sequence[SnapshotRecord], on_commit: Callable[[], None] | None = None
    ) -> None:
        """Store newer snapshots of existing runs; call ``on_commit`` once they are stored.

        A record whose ``seq`` is not above the stored one's, or for a run whose
        stored status is terminal, changes nothing: a run never goes back.
        """
        ...

    def replace(self, record: SnapshotRecord, expected_seq: int) -> bool:
        """Store ``record`` only if the run's stored ``seq`` is still ``expected_seq``.

        A compare-and-set for changes that race (two resumes of one suspended
        run, a resume and a cancel): exactly one caller wins. It fails, and
        changes nothing, if the run is unknown, its stored ``seq`` differs, or
        its stored status is terminal. On a durable store the record is
        committed when this returns ``True``.
        """
        ...

    def load(self, run_id: str) -> SnapshotRecord | None:
        """The newest record of a run, or ``None``. Safe from any thread."""
        ...

    def list_runs(
        self,
        *,
        workflow_id: str | None = None,
        status: str | None = None,
        from_date: float | None = None,
        to_date: float | None = None,
        limit: int | None = 50,
        offset: int = 0,
    ) -> tuple[list[SnapshotRecord], int]:
        """Records newest first (by ``created_at``), filtered, and how many match in all."""
        ...

    def delete(self, run_id: str) -> bool:
        """Delete a run's record; return whether there was one."""
        ...

    def unfinished(self) -> list[SnapshotRecord]:
        """The newest records of runs that are ``pending``, ``running`` or ``waiting``."""
        ...

    def close(self) -> None:
        """Stop writing; records stay readable."""
        ...


@runtime_checkable
class RecoverableStore(SnapshotStore, Protocol):
    """A durable store that knows which runs lost their owner, and hands them over."""

    def orphans(
        self, workflow_ids: Sequence[str] | None = None
    ) -> list[tuple[SnapshotRecord, str | None]]:
        """Unfinished runs whose owner is gone, each with that owner's id."""
        ...

    def claim(self, run_id: str, previous_owner: str | None) -> bool:
        """Take over a run if its owner is still ``previous_owner``."""
        ...


class MemoryStore:
    """Snapshots in a dict: the default store, lost when the process ends."""

    durable = False

    def __init__(self) -> None:
        self._records: dict[str, SnapshotRecord] = {}
        self._lock = threading.Lock()

    def create(self, record: SnapshotRecord) -> bool:
        """Record a new run; ``False`` if its id is taken."""
        with self._lock:
            if record.run_id in self._records:
                return False
            self._records[record.run_id] = record
            return True

    def save(
        self, records: Sequence[SnapshotRecord], on_commit: Callable[[], None] | None = None
    ) -> None:
        """Keep each record that is newer than the stored one, unless that one is terminal."""
        records_now = self._records
        with self._lock:  # against a concurrent replace()
            for record in records:
                current = records_now.get(record.run_id)
                if current is None or (
                    record.seq > current.seq and current.status not in TERMINAL_STATUSES
                ):
                    records_now[record.run_id] = record
        if on_commit is not None:
            on_commit()

    def replace(self, record: SnapshotRecord, expected_seq: int) -> bool:
        """Store ``record`` if the stored one's ``seq`` is ``expected_seq`` and not terminal."""
        with self._lock:
            current = self._records.get(record.run_id)
            if (
                current is None
                or current.seq != expected_seq
                or current.status in TERMINAL_STATUSES
                or record.seq <= current.seq
            ):
                return False
            self._records[record.run_id] = record
            return True

    def load(self, run_id: str) -> SnapshotRecord | None:
        """The newest record of a run, or ``None``."""
        return self._records.get(run_id)

    def list_runs(
        self,
        *,
        workflow_id: str | None = None,
        status: str | None = None,
        from_date: float | None = None,
        to_date: float | None = None,
        limit: int | None = 50,
        offset: int = 0,
    ) -> tuple[list[SnapshotRecord], int]:
        """Records newest first, filtered, and how many match in all."""
        matching = [
            record
            for record in list(self._records.values())
            if (workflow_id is None or record.workflow_id == workflow_id)
            and (status is None or record.status == status)
            and (from_date is None or record.created_at >= from_date)
            and (to_date is None or record.created_at <= to_date)
        ]
        matching.sort(key=lambda record: (-record.created_at, record.run_id))
        end = None if limit is None else offset + limit
        return matching[offset:end], len(matching)

    def delete(self, run_id: str) -> bool:
        """Delete a run's record; return whether there was one."""
        with self._lock:
            return self._records.pop(run_id, None) is not None

    def unfinished(self) -> list[SnapshotRecord]:
        """The records of runs that are ``pending``, ``running`` or ``waiting``."""
        return [
            record
            for record in list(self._records.values())
            if record.status in UNFINISHED_STATUSES
        ]

    def close(self) -> None:
        """Nothing to release: the records stay readable."""

    def __len__(self) -> int:
        return len(self._records)
