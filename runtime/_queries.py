"""Reading runs back: by id, in pages, and from another process with ``RunReader``."""

from __future__ import annotations

import asyncio
import logging
import os
import weakref
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Final, cast

from runtime._errors import SnapshotFormatError, StoreError
from runtime._ids import check_lookup_name, check_resource_id, check_run_id
from runtime._model import RunStatus, WorkflowResult, WorkflowRunList
from runtime._snapshot import read_result
from runtime._stores.base import SnapshotStore
from runtime._stores.open import open_store
from runtime._tracing import emit

__all__ = ["RunReader", "get_run", "list_runs"]

_RESULT_PARTS: dict[str, Any] = {
    "input": None,
    "result": None,
    "error": None,
    "steps": {},
    "state": None,
}
_STATUSES = frozenset(status.value for status in RunStatus)


def get_run(
    store: SnapshotStore,
    run_id: str,
    *,
    workflow_id: str | None = None,
    fields: Iterable[str] | None = None,
) -> WorkflowResult | None:
    """A run by id, optionally only if it belongs to ``workflow_id``, with only ``fields``.

    Raises:
        TypeError: if ``run_id`` is not a string.
        ValueError: for an unknown field name, or a ``run_id`` no store can hold.
        SnapshotFormatError: if the run's stored snapshot cannot be read.
    """
    check_run_id(run_id, lookup=True)
    dropped = _dropped_fields(fields)
    record = store.load(run_id)
    if record is None or (workflow_id is not None and record.workflow_id != workflow_id):
        return None
    result = read_result(record, record.workflow_id)
    if result is None or not dropped:
        return result
    return result.model_copy(update=dropped)


def list_runs(
    store: SnapshotStore,
    *,
    workflow_id: str | None = None,
    status: RunStatus | str | Iterable[RunStatus | str] | None = None,
    from_date: datetime | None = None,
    to_date: datetime | None = None,
    limit: int | None = 50,
    offset: int = 0,
    resource_id: str | None = None,
) -> WorkflowRunList:
    """Runs newest first, filtered and paged; unreadable ones are named, not fatal.

    Raises:
        TypeError: for a date that is not a ``datetime``, a ``limit`` or
            ``offset`` that is not an ``int``, a ``status`` that is not a ``str``
            (or an iterable of them), or a ``workflow_id`` or ``resource_id``
            that is not a ``str``.
        ValueError: for an unknown or no status, a negative or huge offset, a
            limit below 1 or huge, an empty ``resource_id``, or a
            ``workflow_id`` or ``resource_id`` no store can hold.
    """
    statuses = _statuses(status)
    if workflow_id is not None:
        check_lookup_name(workflow_id, "workflow_id")
    if resource_id is not None:
        check_resource_id(resource_id)
    for name, moment in (("from_date", from_date), ("to_date", to_date)):
        if moment is not None and not isinstance(moment, datetime):
            raise TypeError(f"{name} must be a datetime, got {type(moment).__name__}")
    if limit is not None:
        _check_count("limit", limit, least=1)
    _check_count("offset", offset, least=0)
    records, total = store.list_runs(
        workflow_id=workflow_id,
        status=statuses,
        from_date=_epoch(from_date),
        to_date=_epoch(to_date),
        limit=limit,
        offset=offset,
        resource_id=resource_id,
    )
    runs: list[WorkflowResult] = []
    unreadable: list[str] = []
    for record in records:
        try:
            result = read_result(record, record.workflow_id)
        except SnapshotFormatError as exc:
            emit(logging.WARNING, "run_unreadable", run_id=record.run_id, error=str(exc))
            unreadable.append(record.run_id)
            continue
        assert result is not None
        runs.append(result)
    return WorkflowRunList(runs=runs, total=total, unreadable=unreadable)


class RunReader:
    """Read the runs in a run store, from any process, without running anything.

    It opens the store read-only (a SQLite file without taking the writer's
    lock), and it sees what other processes commit while it is open::

        with RunReader("callboard.db") as reader:
            page = reader.list_runs(status="failed", limit=10)

    Args:
        location: A SQLite file, as a path or a ``sqlite:///path`` URL, or a
            PostgreSQL database as a ``postgresql://`` URL.

    Raises:
        StoreError: if there is no run store at that location (or none is named).
        TypeError: if ``location`` is not a path or URL.
    """

    def __init__(self, location: str | os.PathLike[str]) -> None:
        if location == "memory" or location is None or location == "":
            # None or "" (an unset variable, say) opened an empty store in memory.
            raise StoreError(
                f"RunReader reads a durable store: a SQLite file or PostgreSQL, got {location!r}"
            )
        if not isinstance(location, str | os.PathLike):
            raise TypeError(
                f"RunReader takes a path or URL (str or os.PathLike), got {type(location).__name__}"
            )
        self._store = open_store(location, readonly=True)
        _open_readers.add(self)

    def _forked(self) -> None:
        """In a forked child: refuse every read, and never touch the parent's connections.

        A PostgreSQL connection shared with the parent mixed up the two processes'
        replies (a run id read as a count), and closing one from here would end the
        parent's; a SQLite connection may not be used by two processes at all.
        """
        _left_by_the_parent.append(self._store)  # never closed, nor freed, here
        self._store = cast(
            SnapshotStore,
            _ForkedReader(
                f"this RunReader was opened in process {os.getppid()}, and this process "
                f"({os.getpid()}) is a fork of it: its store's connections stay with that "
                "process. Open a new RunReader in this one, after the fork"
            ),
        )

    def __enter__(self) -> RunReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def get_run(self, run_id: str, fields: Iterable[str] | None = None) -> WorkflowResult | None:
        """A run by id, of any workflow; ``fields`` as in ``get_workflow_run_by_id``."""
        return get_run(self._store, run_id, fields=fields)

    def list_runs(
        self,
        *,
        workflow_id: str | None = None,
        status: RunStatus | str | Iterable[RunStatus | str] | None = None,
        from_date: datetime | None = None,
        to_date: datetime | None = None,
        limit: int | None = 50,
        offset: int = 0,
        resource_id: str | None = None,
    ) -> WorkflowRunList:
        """Runs newest first, of one workflow or all; see ``list_workflow_runs``."""
        return list_runs(
            self._store,
            workflow_id=workflow_id,
            status=status,
            from_date=from_date,
            to_date=to_date,
            limit=limit,
            offset=offset,
            resource_id=resource_id,
        )

    async def aget_run(
        self, run_id: str, fields: Iterable[str] | None = None
    ) -> WorkflowResult | None:
        """Await :meth:`get_run` without blocking the event loop (read on a worker thread)."""
        return await asyncio.to_thread(self.get_run, run_id, fields)

    async def alist_runs(
        self,
        *,
        workflow_id: str | None = None,
        status: RunStatus | str | Iterable[RunStatus | str] | None = None,
        from_date: datetime | None = None,
        to_date: datetime | None = None,
        limit: int | None = 50,
        offset: int = 0,
        resource_id: str | None = None,
    ) -> WorkflowRunList:
        """Await :meth:`list_runs` without blocking the event loop (read on a worker thread)."""
        return await asyncio.to_thread(
            self.list_runs,
            workflow_id=workflow_id,
            status=status,
            from_date=from_date,
            to_date=to_date,
            limit=limit,
            offset=offset,
            resource_id=resource_id,
        )

    def close(self) -> None:
        """Close the reader (its connections close with their threads)."""
        self._store.close()


class _ForkedReader:
    """Stands in, in a forked child, for the store of a reader opened before the fork."""

    __slots__ = ("_reason",)

    def __init__(self, reason: str) -> None:
        self._reason = reason

    def close(self) -> None:
        """Nothing to close here: the connections are the parent's."""

    def __getattr__(self, name: str) -> Any:
        raise StoreError(self._reason)


_open_readers: weakref.WeakSet[RunReader] = weakref.WeakSet()
_left_by_the_parent: list[Any] = []


def _after_fork() -> None:
    for reader in list(_open_readers):
        reader._forked()
    _open_readers.clear()


os.register_at_fork(after_in_child=_after_fork)


def _statuses(status: object) -> str | tuple[str, ...] | None:
    """The status filter as the store takes it: one status, several (sorted), or none."""
    if status is None:
        return None
    if isinstance(status, str):
        values: list[object] = [status]
    elif isinstance(status, Iterable) and not isinstance(status, bytes | Mapping):
        values = list(status)
        if not values:
            raise ValueError("status must name at least one status")
    else:
        raise TypeError(f"status must be a str or an iterable of them, got {type(status).__name__}")
    for value in values:
        if not isinstance(value, str):
            raise TypeError(f"status must be a str, got {type(value).__name__}")
        if value not in _STATUSES:
            raise ValueError(f"status must be one of {sorted(_STATUSES)}, got {value!r}")
    if len(values) == 1:
        return str(values[0])
    return tuple(sorted({str(value) for value in values}))


def _dropped_fields(fields: Iterable[str] | None) -> dict[str, Any]:
    if fields is None:
        return {}
    if isinstance(fields, str):
        fields = [fields]
    if not isinstance(fields, Iterable):
        raise TypeError(
            f"fields must be names of result parts (a list of str), got {type(fields).__name__}"
        )
    wanted = set(fields)
    strange = [name for name in wanted if not isinstance(name, str)]
    if strange:
        raise TypeError(f"fields must be names of result parts (str), got {strange[0]!r}")
    unknown = wanted - set(_RESULT_PARTS)
    if unknown:
        raise ValueError(
            f"unknown fields {sorted(unknown)}: choose among {sorted(_RESULT_PARTS)} "
            "(ids, status and times are always included)"
        )
    return {name: empty for name, empty in _RESULT_PARTS.items() if name not in wanted}


_MOST_ROWS: Final = 2**63 - 1
"""The largest count a store can take (SQLite's and PostgreSQL's 64-bit integers)."""


def _check_count(name: str, value: object, *, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not least <= value <= _MOST_ROWS:
        raise ValueError(f"{name} must be from {least} to 2**63 - 1, got {value}")


def _epoch(moment: datetime | None) -> float | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
