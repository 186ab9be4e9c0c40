"""``MemoryStore``: runs kept in a dict, the default store, lost with the process."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from runtime._model import TERMINAL_STATUSES, UNFINISHED_STATUSES
from runtime._stores.base import SnapshotRecord

__all__ = ["MemoryStore"]


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
        self,
        records: Sequence[SnapshotRecord],
        on_commit: Callable[[], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        """Keep each record that is newer than the stored one, unless that one is terminal.

        Keeping a record in a dict cannot fail: ``on_error`` is never called.
        """
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
