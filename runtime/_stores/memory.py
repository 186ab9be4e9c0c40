"""``MemoryStore``: runs kept in a dict, the default store, lost with the process."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from runtime._model import SETTLED_STATUSES, TERMINAL_STATUSES, UNFINISHED_STATUSES, RunStatus
from runtime._stores.base import PRUNE_CHUNK, SnapshotRecord, status_set

__all__ = ["MemoryStore"]


_Kept = SnapshotRecord | tuple[Any, ...]
"""What the dict holds for a run: its record, or the record's fields as a plain tuple."""

_new_tuple: Any = tuple.__new__  # builds a SnapshotRecord from its fields without keywords

_LET_GO = SETTLED_STATUSES | {RunStatus.WAITING}
"""The statuses of a run whose actor let go of it: its record stays as it is, maybe for long."""


def _kept(record: SnapshotRecord) -> _Kept:
    """What the dict keeps of ``record``: a plain tuple of its fields when they are plain values.

    Python's cyclic garbage collector stops tracking a plain tuple of plain
    values (text, numbers, bytes, ``None``) the first time it looks at it, and
    never stops tracking a subclass of tuple such as ``SnapshotRecord``. A run
    that ended, sleeps or suspends stays here as bytes (see
    ``SnapshotFreezer.next_record``): kept as a named tuple, each such run
    would add an object to every full collection for as long as it is kept,
    so a process's pauses would grow with its history of runs.
    """
    if (
        type(record) is SnapshotRecord
        and record.status in _LET_GO
        and type(record.data) is bytes
        and record.parts is None
    ):
        return tuple(record)
    return record


def _record(kept: _Kept) -> SnapshotRecord:
    """The record the dict keeps as ``kept`` (see :func:`_kept`)."""
    if type(kept) is tuple:
        record: SnapshotRecord = _new_tuple(SnapshotRecord, kept)
        return record
    return kept  # type: ignore[return-value]


# Where save reads a kept record's fields: by index, the same for a SnapshotRecord
# and for the plain tuple of its fields, with no call made to turn one into the other.
_SEQ, _STATUS, _CREATED_AT, _UPDATED_AT, _RESOURCE_ID = (
    SnapshotRecord._fields.index(name)
    for name in ("seq", "status", "created_at", "updated_at", "resource_id")
)


def _keeping_resource(record: SnapshotRecord, current: SnapshotRecord) -> SnapshotRecord:
    """``record``, with the run's resource id when it carries none (as a SQL row keeps it)."""
    if record.resource_id is None and current.resource_id is not None:
        return record._replace(resource_id=current.resource_id)
    return record


class MemoryStore:
    """Snapshots in a dict: the default store, lost when the process ends."""

    durable = False

    def __init__(self) -> None:
        self._records: dict[str, _Kept] = {}
        self._lock = threading.Lock()
        self._deleted = 0  # since the dict was last copied
        # Idempotency keys, both ways: (workflow, key) -> run, and run -> (workflow, key).
        self._keys: dict[tuple[str, str], str] = {}
        self._key_of: dict[str, tuple[str, str]] = {}
        self.on_delete: Callable[[str], None] | None = None
        """Told the id of each run :meth:`delete` deleted: the runtime's queues forget its
        start (a SQL store counts a rate window from the runs it holds, a memory one cannot)."""

    def create(self, record: SnapshotRecord) -> bool:
        """Record a new run; ``False`` if its id, or its workflow's idempotency key, is taken."""
        # A run's first record is seldom a plain one (a frozen record, from a start in
        # memory): kept as it is without the call, as save() keeps one.
        kept = _kept(record) if type(record) is SnapshotRecord else record
        with self._lock:
            if record.run_id in self._records:
                return False
            key = record.idempotency_key
            if key is not None:
                entry = (record.workflow_id, key)
                if entry in self._keys:
                    return False
                self._keys[entry] = record.run_id
                self._key_of[record.run_id] = entry
            self._records[record.run_id] = kept
            return True

    def run_for_key(self, workflow_id: str, key: str) -> str | None:
        """The run of ``workflow_id`` started with idempotency key ``key``, or ``None``."""
        return self._keys.get((workflow_id, key))

    def _forget_key(self, run_id: str) -> None:
        entry = self._key_of.pop(run_id, None)
        if entry is not None:
            self._keys.pop(entry, None)

    def save(
        self,
        records: Sequence[SnapshotRecord],
        on_commit: Callable[[], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        """Keep each record that is newer than the stored one, unless that one is terminal.

        Keeping a record in a dict cannot fail: ``on_error`` is never called.

        Nothing done under the lock lets go of the GIL. The interpreter hands its lock
        (the GIL) from thread to thread only where a thread calls a function or loops
        back; a thread made to hand it over while it holds the store's lock makes every
        thread that wants the store wait for it to get the GIL back (100 to 400 µs a
        time, measured on two busy cores), and once it happens it tends to go on (a
        caller's ``create`` waits behind a run actor's save, which then waits behind
        the caller's next ``create``). So the work is done before the lock is taken,
        and under it are only reads of the dict and the kept record (by index, whether
        it is kept as a record or as a plain tuple) and one store into the dict (a save
        with no resource id onto a run that has one aside: rare, it copies the id
        across). Each record's work is inline in the loop: a run in memory saves a
        record at every transition, and a call more per save is a call more per step.
        """
        for record in records:
            run_id = record.run_id
            # Only a plain SnapshotRecord may be kept as a tuple (see _kept): a frozen
            # record that a run actor still drives is kept as it is, without the call.
            kept_as = _kept(record) if type(record) is SnapshotRecord else record
            created_at, seq = record.created_at, record.seq
            plain_resource = record.resource_id is None
            with self._lock:  # against a concurrent replace(), delete() or prune()
                records_now = self._records
                # A run that is not here (deleted meanwhile) stays gone: only create()
                # records a run, and a save still on its way must not bring one back, nor
                # land on a new run given the same id since (created at another time).
                if run_id not in records_now:
                    continue
                kept: tuple[Any, ...] = records_now[run_id]  # a record, or a let-go tuple
                if (
                    kept[_CREATED_AT] != created_at  # a new run of that id since
                    or seq <= kept[_SEQ]
                    or kept[_STATUS] in TERMINAL_STATUSES
                ):
                    continue
                if plain_resource and kept[_RESOURCE_ID] is not None:
                    kept_as = _kept(_keeping_resource(record, _record(kept)))
                records_now[run_id] = kept_as
        if on_commit is not None:
            on_commit()

    def replace(self, record: SnapshotRecord, expected_seq: int, *, reopen: bool = False) -> bool:
        """Store ``record`` if the stored one's ``seq`` is ``expected_seq`` and not terminal.

        With ``reopen``, only if the stored one is terminal (``run.restart()``).
        """
        with self._lock:
            kept = self._records.get(record.run_id)
            current = None if kept is None else _record(kept)
            if (
                current is None
                or current.created_at != record.created_at  # a new run of that id since
                or current.seq != expected_seq
                or (current.status in TERMINAL_STATUSES) != reopen
                or record.seq <= current.seq
            ):
                return False
            self._records[record.run_id] = _kept(_keeping_resource(record, current))
            return True

    def load(self, run_id: str) -> SnapshotRecord | None:
        """The newest record of a run, or ``None``."""
        kept = self._records.get(run_id)
        if type(kept) is tuple:  # _record(kept), inline: every wait and read comes here
            record: SnapshotRecord = _new_tuple(SnapshotRecord, kept)
            return record
        return kept  # type: ignore[return-value]  # a record, or None

    def list_runs(
        self,
        *,
        workflow_id: str | None = None,
        status: str | Sequence[str] | None = None,
        from_date: float | None = None,
        to_date: float | None = None,
        limit: int | None = 50,
        offset: int = 0,
        resource_id: str | None = None,
    ) -> tuple[list[SnapshotRecord], int]:
        """Records newest first, filtered, and how many match in all."""
        statuses = status_set(status)
        matching = [
            record
            for record in map(_record, list(self._records.values()))
            if (workflow_id is None or record.workflow_id == workflow_id)
            and (statuses is None or record.status in statuses)
            and (resource_id is None or record.resource_id == resource_id)
            and (from_date is None or record.created_at >= from_date)
            and (to_date is None or record.created_at <= to_date)
        ]
        matching.sort(key=lambda record: (-record.created_at, record.run_id))
        end = None if limit is None else offset + limit
        return matching[offset:end], len(matching)

    def delete(self, run_id: str) -> bool:
        """Delete the record of a run that has ended; return whether it did.

        ``False`` for a run that is not there, and for one that has not ended
        (``success``, ``failed`` or ``canceled``): the status is checked in the
        same step as the delete, so a run restarted meanwhile is never deleted
        under its actor.
        """
        with self._lock:
            kept = self._records.get(run_id)
            if kept is None or _record(kept).status not in TERMINAL_STATUSES:
                return False
            del self._records[run_id]
            self._forget_key(run_id)
            self._deleted += 1
            if self._deleted > len(self._records):
                self._shrink()
            on_delete = self.on_delete
            if on_delete is not None:
                # Under the lock: a new run given this id can be created only after, so the
                # queues hear of the delete before they hear of that run's start.
                on_delete(run_id)
            return True

    def _shrink(self) -> None:
        """Copy the dict once most of it is gone: a dict never shrinks its table itself."""
        self._records = dict(self._records)
        self._deleted = 0

    def prune(
        self,
        *,
        ended_before: float | None = None,
        keep: int | None = None,
        status: str | None = None,
    ) -> int:
        """Delete ended runs older than ``ended_before``, then all but the newest ``keep``.

        ``on_delete`` is not told: a run pruned still counts in its queue's rate
        window, as a SQL store's retention keeps such a run until it counts no more.

        The runs are looked at outside the lock, on a copy of the dict's entries,
        and deleted :data:`~runtime._stores.base.PRUNE_CHUNK` at a time: every
        run's save waits for the lock, and a look at 100,000 runs kept held it
        150 ms a pass, with nothing to delete.
        """
        statuses = TERMINAL_STATUSES if status is None else TERMINAL_STATUSES & {status}
        with self._lock:
            entries = list(self._records.items())  # one call: the copy holds the lock briefly
        # By index, the same for a record and for the plain tuple of its fields.
        ended = [entry for entry in entries if entry[1][_STATUS] in statuses]
        doomed: list[tuple[str, _Kept]] = []
        if ended_before is not None:
            doomed = [entry for entry in ended if entry[1][_UPDATED_AT] < ended_before]
            ended = [entry for entry in ended if entry[1][_UPDATED_AT] >= ended_before]
        if keep is not None and len(ended) > keep:
            ended.sort(key=lambda entry: entry[1][_UPDATED_AT], reverse=True)
            doomed.extend(ended[keep:])
        deleted = 0
        for at in range(0, len(doomed), PRUNE_CHUNK):
            with self._lock:
                records = self._records
                gone = 0
                for run_id, kept in doomed[at : at + PRUNE_CHUNK]:
                    # Only as it was looked at: a run restarted since (or deleted, and made
                    # again under its id) is kept in another object, and stays.
                    if records.get(run_id) is kept:
                        del records[run_id]
                        self._forget_key(run_id)
                        gone += 1
                deleted += gone
                self._deleted += gone
                if self._deleted > len(self._records):
                    self._shrink()  # memory follows the runs kept, not the most ever held
        return deleted

    def unfinished(self) -> list[SnapshotRecord]:
        """The records of runs that are ``pending``, ``running`` or ``waiting``."""
        return [
            record
            for record in map(_record, list(self._records.values()))
            if record.status in UNFINISHED_STATUSES
        ]

    def close(self) -> None:
        """Nothing to release: the records stay readable."""

    def __len__(self) -> int:
        return len(self._records)
