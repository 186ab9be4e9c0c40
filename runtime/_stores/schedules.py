"""Where schedules are kept: beside the runs, in the same store.

A :class:`ScheduleBook` holds each schedule's definition and where it stands
(paused, the newest tick handled, the run of the newest tick fired). Memory
keeps them in a dict (one book per store object, shared by the runtimes that
share the object); SQLite in the ``schedules`` table of the run file;
PostgreSQL in ``callboard_schedules``. Every change is one statement,
committed when it returns: schedules change at a human's pace or once a
tick, so they need none of the runs' group commit.

Ticks move forward only (:meth:`ScheduleBook.advance` is conditioned on the
stored tick being older), so of several runtimes that handle one tick, the
first to write it wins and the others change nothing. The one way back is
:meth:`ScheduleBook.rewind`: a tick more than :data:`AHEAD_MARGIN` later than
the store's clock (:meth:`ScheduleBook.clock`) was stored by a runtime whose
clock ran ahead, and held every runtime's schedule silent until real time
reached it. The store's clock is the one all its runtimes share: the
process's on memory, the host's on SQLite (every process on one file reads
one clock), the database server's on PostgreSQL.
"""

from __future__ import annotations

import contextlib
import math
import os
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Final, NamedTuple, Protocol, TypeVar

from runtime import _clock
from runtime._errors import StoreError
from runtime._stores.base import SnapshotStore
from runtime._stores.postgres import DATABASE_NOW, PostgresStore
from runtime._stores.sqlite import LOCK_TIMEOUT, SQLiteStore, in_memory_temp, read_uri

if TYPE_CHECKING:
    from runtime._stores.postgres import Connection

_T = TypeVar("_T")

__all__ = [
    "AHEAD_MARGIN",
    "MemoryBook",
    "PostgresBook",
    "SQLiteBook",
    "ScheduleBook",
    "ScheduleRow",
    "book_for",
    "close_book",
]


AHEAD_MARGIN: Final = 60.0
"""Seconds a stored tick may be later than the store's clock before it counts as ahead.

More than the skew of ordinary clocks (NTP keeps them within a second), less than a
schedule's silence anyone would put up with: a tick further ahead was stored by a
runtime whose clock ran ahead, and :meth:`ScheduleBook.rewind` may move it back."""


class ScheduleRow(NamedTuple):
    """One schedule as a book keeps it.

    Attributes:
        schedule_id: Its id.
        workflow_id: The workflow it starts.
        cron: Its cron expression.
        timezone: The time zone the expression is read in.
        input: Each run's input, as JSON text.
        catch_up: ``"skip"``, ``"latest"`` or ``"all"``.
        overlap: ``"skip"`` or ``"allow"``.
        paused: Whether it is paused.
        created_at: When it was first stored (epoch seconds): ticks before are not its.
        last_tick: The newest tick handled (epoch seconds), or ``None``.
        last_run_id: The run of the newest tick that started one, or ``None``.
        buffered: A tick that waits for the last run to end (``overlap="buffer_one"``),
            or for room in its queue (its run found it full).
        damaged: What of the row cannot be read (a time that is not a number,
            written by hand into a SQLite file), or ``None``. Such a schedule
            is listed with it as its error, and fires no tick until it is
            defined again, which repairs the row.
    """

    schedule_id: str
    workflow_id: str
    cron: str
    timezone: str
    input: str
    catch_up: str
    overlap: str
    paused: bool
    created_at: float
    last_tick: float | None = None
    last_run_id: str | None = None
    buffered: float | None = None
    damaged: str | None = None


class ScheduleBook(Protocol):
    """What the runtime needs to keep schedules; every method is safe from any thread."""

    def put(self, row: ScheduleRow) -> None:
        """Store a schedule's definition; one already there keeps its state (paused, ticks).

        But a new cron or time zone counts its ticks from the put (``row.created_at``):
        the new definition's ticks before it were never due, and none is caught up.
        """
        ...

    def all(self) -> list[ScheduleRow]:
        """Every schedule, by id."""
        ...

    def get(self, schedule_id: str) -> ScheduleRow | None:
        """One schedule, or ``None``."""
        ...

    def set_paused(self, schedule_id: str, paused: bool, now: float) -> bool:
        """Pause or resume; ``False`` if there is no such schedule.

        A resume of a paused schedule moves its last tick to ``now``: the
        ticks that passed while it was paused are not missed, they are skipped.
        A pause drops a buffered tick, which would otherwise start its run
        after the resume.
        """
        ...

    def delete(self, schedule_id: str) -> bool:
        """Delete a schedule; whether there was one. Its runs are left alone."""
        ...

    def advance(
        self, schedule_id: str, tick: float, run_id: str | None, *, buffer: bool = False
    ) -> bool:
        """Record ``tick`` as handled (and ``run_id`` as its run), if it is newer than the last.

        A ``run_id`` is recorded for the tick the schedule is at, too: another
        process may have passed over that tick while this one started its run.
        With ``buffer``, the tick is also kept to start once the last run ends,
        unless a tick is kept already (one at most: later ones are dropped).
        """
        ...

    def release(self, schedule_id: str, tick: float, run_id: str) -> bool:
        """The buffered ``tick`` got its run ``run_id``: forget it; ``False`` if another did."""
        ...

    def clock(self) -> float:
        """The store's time (epoch seconds): the clock every runtime on the store shares.

        The process's clock for memory, the host's for SQLite, the database
        server's for PostgreSQL (a test kit's virtual clock wherever one is
        installed). It judges whether a stored tick lies in the future.
        """
        ...

    def rewind(self, schedule_id: str, expected: float, to: float) -> bool:
        """Move the last tick back from ``expected`` to ``to``; whether it moved.

        A compare-and-set: only if the last tick is still ``expected`` (no
        runtime moved it meanwhile), ``to`` is older, and ``expected`` is more
        than :data:`AHEAD_MARGIN` later than the store's clock, judged by the
        store (so that a runtime whose own clock is behind cannot move back
        the ticks of runtimes whose clocks are right). A buffered tick later
        than ``to`` is dropped: it too was a tick of the clock that ran ahead.
        """
        ...


_COLUMNS: Final = (
    "schedule_id, workflow_id, cron, timezone, input, catch_up, overlap, paused, "
    "created_at, last_tick, last_run_id, buffered"
)


_LATEST: Final = 1e11
"""Seconds from the epoch (about the year 5138) past which a stored time is damage."""


def _row(values: tuple[Any, ...] | Any) -> ScheduleRow:
    problems: list[str] = []
    created_at = _time(values[8], "created_at", problems)
    return ScheduleRow(
        schedule_id=values[0],
        workflow_id=values[1],
        cron=values[2],
        timezone=values[3],
        input=values[4],
        catch_up=values[5],
        overlap=values[6],
        paused=bool(values[7]),
        created_at=0.0 if created_at is None else created_at,
        last_tick=_time(values[9], "last_tick", problems),
        last_run_id=values[10],
        buffered=_time(values[11], "buffered", problems),
        damaged="; ".join(problems) or None,
    )


def _time(value: Any, column: str, problems: list[str]) -> float | None:
    """A time column's value; ``None`` (and a problem said) if it is not a time in range.

    SQLite keeps whatever a hand writes into a column: one row must not stop
    every schedule from being read.
    """
    if value is None and column != "created_at":
        return None
    if (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and abs(value) < _LATEST
    ):
        return float(value)
    problems.append(f"its {column} is {value!r}, not a time")
    return None


class MemoryBook:
    """Schedules in a dict: lost with the process, as the memory store's runs are."""

    def __init__(self) -> None:
        self._rows: dict[str, ScheduleRow] = {}
        self._lock = threading.Lock()

    def put(self, row: ScheduleRow) -> None:
        with self._lock:
            known = self._rows.get(row.schedule_id)
            if known is not None:
                last_tick = known.last_tick
                if (known.cron, known.timezone) != (row.cron, row.timezone) and (
                    last_tick is None or last_tick < row.created_at
                ):
                    last_tick = row.created_at  # the new definition's ticks count from now
                row = row._replace(
                    paused=known.paused,
                    created_at=known.created_at,
                    last_tick=last_tick,
                    last_run_id=known.last_run_id,
                    buffered=known.buffered,
                )
            self._rows[row.schedule_id] = row

    def all(self) -> list[ScheduleRow]:
        with self._lock:
            return [self._rows[key] for key in sorted(self._rows)]

    def get(self, schedule_id: str) -> ScheduleRow | None:
        return self._rows.get(schedule_id)

    def set_paused(self, schedule_id: str, paused: bool, now: float) -> bool:
        with self._lock:
            row = self._rows.get(schedule_id)
            if row is None:
                return False
            last = row.last_tick
            if row.paused and not paused and (last is None or last < now):
                last = now
            buffered = None if paused else row.buffered
            self._rows[schedule_id] = row._replace(paused=paused, last_tick=last, buffered=buffered)
            return True

    def delete(self, schedule_id: str) -> bool:
        with self._lock:
            return self._rows.pop(schedule_id, None) is not None

    def advance(
        self, schedule_id: str, tick: float, run_id: str | None, *, buffer: bool = False
    ) -> bool:
        with self._lock:
            row = self._rows.get(schedule_id)
            if row is None:
                return False
            last = row.last_tick
            if last is not None and (last > tick or (last == tick and run_id is None)):
                return False
            if row.created_at > tick:
                return False  # not a tick of this definition (see _ADVANCE)
            if buffer and row.buffered is None:
                buffered: float | None = tick
            elif row.buffered == tick and run_id is not None and not buffer:
                buffered = None  # the tick kept got its run (see _ADVANCE)
            else:
                buffered = row.buffered
            self._rows[schedule_id] = row._replace(
                last_tick=tick,
                last_run_id=run_id if run_id is not None else row.last_run_id,
                buffered=buffered,
            )
            return True

    def release(self, schedule_id: str, tick: float, run_id: str) -> bool:
        with self._lock:
            row = self._rows.get(schedule_id)
            if row is None or row.buffered != tick:
                return False
            self._rows[schedule_id] = row._replace(buffered=None, last_run_id=run_id)
            return True

    def clock(self) -> float:
        return _clock.time()

    def rewind(self, schedule_id: str, expected: float, to: float) -> bool:
        with self._lock:
            row = self._rows.get(schedule_id)
            if row is None or row.last_tick != expected or not to < expected:
                return False
            if not expected > self.clock() + AHEAD_MARGIN:
                return False
            buffered = None if row.buffered is not None and row.buffered > to else row.buffered
            self._rows[schedule_id] = row._replace(last_tick=to, buffered=buffered)
            return True


# The statements of both SQL books; "?" becomes "%s" for PostgreSQL.
_PUT: Final = f"""
INSERT INTO {{table}} ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, {{false}}, ?, NULL, NULL, NULL)
ON CONFLICT (schedule_id) DO UPDATE SET
    workflow_id = excluded.workflow_id, cron = excluded.cron, timezone = excluded.timezone,
    input = excluded.input, catch_up = excluded.catch_up, overlap = excluded.overlap,
    last_tick = CASE WHEN ({{table}}.cron <> excluded.cron
            OR {{table}}.timezone <> excluded.timezone)
        AND ({{table}}.last_tick IS NULL OR {{table}}.last_tick < excluded.created_at)
        THEN excluded.created_at ELSE {{table}}.last_tick END
"""
"""A schedule's definition; one stored already keeps its state, but a new cron or time zone
counts its ticks from now (``created_at`` is the put's time): the new definition's ticks
before it was written were never due."""
_SET_PAUSED: Final = """
UPDATE {table} SET
    last_tick = CASE WHEN paused AND NOT ? AND (last_tick IS NULL OR last_tick < ?)
        THEN ? ELSE last_tick END,
    buffered = CASE WHEN ? THEN NULL ELSE buffered END,
    paused = ?
WHERE schedule_id = ?
"""
"""Pause (dropping a buffered tick: it would start its run after the resume) or resume
(skipping the ticks of the pause)."""
_ADVANCE: Final = """
UPDATE {table} SET last_tick = ?, last_run_id = COALESCE(?, last_run_id),
    buffered = CASE WHEN ? AND buffered IS NULL THEN ?
        WHEN buffered = ? AND CAST(? AS TEXT) IS NOT NULL AND NOT ? THEN NULL
        ELSE buffered END
WHERE schedule_id = ? AND created_at <= ? AND (last_tick IS NULL OR last_tick < ?
    OR (last_tick = ? AND CAST(? AS TEXT) IS NOT NULL))
"""
"""Move a schedule's last tick on; or, for the tick it is at, record the run it got: another
process may have passed over that tick (its previous run going on, as that process read it)
while this one started its run, which the overlap policy must then wait for. A tick from
before the schedule's definition is not its own (a pass of a definition deleted since and
defined anew): it moved the new one's ticks back, to be caught up on. A tick kept
buffered that gets its run so is no longer buffered (another process, reading the previous
run ended, started it at once): kept, it held the slot, the next tick was dropped for it,
and it started nothing. An advance that buffers never lets go of the tick buffered: done
twice (its statement tried again on a new connection after the reply to its commit was
lost), the second let go of what the first had buffered, and that tick never ran."""


def _advance_params(
    schedule_id: str, tick: float, run_id: str | None, buffer: bool
) -> tuple[Any, ...]:
    """The parameters of :data:`_ADVANCE`, in the order of its placeholders."""
    return (tick, run_id, buffer, tick, tick, run_id, buffer, schedule_id, tick, tick, tick, run_id)


_RELEASE: Final = """
UPDATE {table} SET buffered = NULL, last_run_id = ? WHERE schedule_id = ? AND buffered = ?
"""


_REWIND: Final = """
UPDATE {table} SET last_tick = ?, buffered = CASE WHEN buffered > ? THEN NULL ELSE buffered END
WHERE schedule_id = ? AND last_tick = ? AND last_tick > ? AND last_tick > {now} + ?
"""
"""Move a last tick that is ahead of the store's clock back (see :meth:`ScheduleBook.rewind`):
only from the tick read (a compare-and-set), and only while the store's clock, read in the
statement itself, still finds it ahead."""


_REPAIR: Final = f"""
UPDATE schedules SET
    created_at = CASE WHEN typeof(created_at) IN ('real', 'integer')
        AND abs(created_at) < {_LATEST:.0f} THEN created_at ELSE ? END,
    last_tick = CASE WHEN last_tick IS NULL OR typeof(last_tick) IN ('real', 'integer')
        AND abs(last_tick) < {_LATEST:.0f} THEN last_tick ELSE ? END,
    buffered = CASE WHEN buffered IS NULL OR typeof(buffered) IN ('real', 'integer')
        AND abs(buffered) < {_LATEST:.0f} THEN buffered ELSE NULL END
WHERE schedule_id = ?
"""
"""Resets the times of a SQLite row that are not numbers (put there by hand)."""


def _sql(statement: str, table: str, *, postgres: bool, now: str = "?") -> str:
    text = statement.format(table=table, false="false" if postgres else "0", now=now)
    return text.replace("?", "%s") if postgres else text


class SQLiteBook:
    """Schedules in the ``schedules`` table of a SQLite run file, on a connection of their own.

    Args:
        store: The run store whose file keeps them.
    """

    _TABLE: Final = "schedules"

    def __init__(self, store: SQLiteStore) -> None:
        self._path = store.path
        self._readonly = store.readonly
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None
        self._pid = os.getpid()

    @contextlib.contextmanager
    def _using(self, *, write: bool = False) -> Iterator[sqlite3.Connection]:
        if write and self._readonly:
            raise StoreError(f"the run store {self._path} is open read-only")
        with self._lock:
            try:
                if self._connection is None:
                    # Read-only, as the store's readers open it (read-only media too).
                    uri = read_uri(self._path) if self._readonly else f"file:{self._path}?mode=rw"
                    self._connection = sqlite3.connect(
                        uri,
                        uri=True,
                        timeout=LOCK_TIMEOUT,
                        isolation_level=None,  # each statement commits on its own
                        check_same_thread=False,
                    )
                    in_memory_temp(self._connection)
                yield self._connection
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc) and not write:
                    raise _NoTable from exc  # a file from before schedules: none to read
                raise StoreError(f"cannot use the schedules of {self._path}: {exc}") from exc
            except sqlite3.Error as exc:
                raise StoreError(f"cannot use the schedules of {self._path}: {exc}") from exc

    def _query(self, statement: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        try:
            with self._using() as connection:
                rows: list[tuple[Any, ...]] = connection.execute(statement, params).fetchall()
                return rows
        except _NoTable:
            return []

    def _change(self, statement: str, params: tuple[Any, ...]) -> int:
        with self._using(write=True) as connection:
            return connection.execute(statement, params).rowcount

    def close(self) -> None:
        """Close the book's connection (a later call opens another)."""
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    def __del__(self) -> None:
        # A book outlives its runtime's stop when schedules are read after it; Python
        # (3.13 on) warns about a connection left for the garbage collector to close.
        connection = self._connection
        # Not in a forked child: the connection is the parent's (see sqlite._Reader).
        if connection is not None and os.getpid() == self._pid:
            with contextlib.suppress(Exception):
                connection.close()

    def put(self, row: ScheduleRow) -> None:
        self._change(
            _sql(_PUT, self._TABLE, postgres=False),
            (*row[:7], row.created_at),
        )
        # A time written by hand that is not a number: the definition written now
        # repairs it, counting the schedule's ticks from now (as for a new cron).
        self._change(_REPAIR, (row.created_at, row.created_at, row.schedule_id))

    def all(self) -> list[ScheduleRow]:
        found = self._query(f"SELECT {_COLUMNS} FROM {self._TABLE} ORDER BY schedule_id", ())
        return [_row(values) for values in found]

    def get(self, schedule_id: str) -> ScheduleRow | None:
        found = self._query(
            f"SELECT {_COLUMNS} FROM {self._TABLE} WHERE schedule_id = ?", (schedule_id,)
        )
        return _row(found[0]) if found else None

    def set_paused(self, schedule_id: str, paused: bool, now: float) -> bool:
        statement = _sql(_SET_PAUSED, self._TABLE, postgres=False)
        return self._change(statement, (paused, now, now, paused, paused, schedule_id)) == 1

    def delete(self, schedule_id: str) -> bool:
        return self._change(f"DELETE FROM {self._TABLE} WHERE schedule_id = ?", (schedule_id,)) == 1

    def advance(
        self, schedule_id: str, tick: float, run_id: str | None, *, buffer: bool = False
    ) -> bool:
        statement = _sql(_ADVANCE, self._TABLE, postgres=False)
        return self._change(statement, _advance_params(schedule_id, tick, run_id, buffer)) == 1

    def release(self, schedule_id: str, tick: float, run_id: str) -> bool:
        statement = _sql(_RELEASE, self._TABLE, postgres=False)
        return self._change(statement, (run_id, schedule_id, tick)) == 1

    def clock(self) -> float:
        # One file, one host, one clock: every process on the file reads this one.
        return _clock.time()

    def rewind(self, schedule_id: str, expected: float, to: float) -> bool:
        statement = _sql(_REWIND, self._TABLE, postgres=False)
        params = (to, to, schedule_id, expected, to, self.clock(), AHEAD_MARGIN)
        return self._change(statement, params) == 1


class _NoTable(Exception):
    """The file has no schedules table yet (written by an older callboard, opened read-only)."""


class PostgresBook:
    """Schedules in ``callboard_schedules``, on the store's pooled autocommit connections."""

    _TABLE: Final = "callboard_schedules"

    def __init__(self, store: PostgresStore) -> None:
        # Not the store itself: the books are kept by store in a weak mapping, which a
        # value holding its own key would keep for ever (one store a runtime started).
        self._ref = weakref.ref(store)

    @property
    def _store(self) -> PostgresStore:
        store = self._ref()
        if store is None:
            raise StoreError("the PostgreSQL store of these schedules is gone")
        return store

    def _query(self, statement: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        def read(connection: Connection) -> list[tuple[Any, ...]]:
            exists = connection.execute(
                "SELECT to_regclass(%s) IS NOT NULL", (self._TABLE,)
            ).fetchone()
            if exists is None or not exists[0]:
                return []
            return connection.execute(statement, params).fetchall()

        return self._store.read_with(read)

    def _change(self, statement: str, params: tuple[Any, ...]) -> int:
        def write(connection: Connection) -> int:
            return connection.execute(statement, params).rowcount

        return self._write(write)

    def _write(self, write: Callable[[Connection], _T]) -> _T:
        """``write`` on a pooled connection (tried once more on a new one if it is lost)."""
        if self._store.readonly:
            raise StoreError(f"the PostgreSQL store {self._store.location} is open read-only")
        return self._store.read_with(write)

    def put(self, row: ScheduleRow) -> None:
        self._change(_sql(_PUT, self._TABLE, postgres=True), (*row[:7], row.created_at))

    def all(self) -> list[ScheduleRow]:
        found = self._query(f"SELECT {_COLUMNS} FROM {self._TABLE} ORDER BY schedule_id", ())
        return [_row(values) for values in found]

    def get(self, schedule_id: str) -> ScheduleRow | None:
        found = self._query(
            f"SELECT {_COLUMNS} FROM {self._TABLE} WHERE schedule_id = %s", (schedule_id,)
        )
        return _row(found[0]) if found else None

    def set_paused(self, schedule_id: str, paused: bool, now: float) -> bool:
        statement = _sql(_SET_PAUSED, self._TABLE, postgres=True)
        return self._change(statement, (paused, now, now, paused, paused, schedule_id)) == 1

    def delete(self, schedule_id: str) -> bool:
        statement = f"DELETE FROM {self._TABLE} WHERE schedule_id = %s"
        found = False

        def write(connection: Connection) -> bool:
            # The store tries once more on a new connection when the first is lost. Lost
            # at the commit, after the server committed the delete, the second try
            # finds no row: it answers as the first did, which found the row. (Its own
            # transaction, not one autocommitted statement, tells a connection lost
            # before the delete ran, which found nothing, from one lost at its commit.)
            nonlocal found
            with connection.transaction():
                deleted = connection.execute(statement, (schedule_id,)).rowcount == 1
                found = found or deleted
            return found

        return self._write(write)

    def advance(
        self, schedule_id: str, tick: float, run_id: str | None, *, buffer: bool = False
    ) -> bool:
        statement = _sql(_ADVANCE, self._TABLE, postgres=True)
        return self._change(statement, _advance_params(schedule_id, tick, run_id, buffer)) == 1

    def release(self, schedule_id: str, tick: float, run_id: str) -> bool:
        statement = _sql(_RELEASE, self._TABLE, postgres=True)
        return self._change(statement, (run_id, schedule_id, tick)) == 1

    def clock(self) -> float:
        return self._store.database_time()

    def rewind(self, schedule_id: str, expected: float, to: float) -> bool:
        # The database's clock judges, in the statement: never this host's.
        statement = _sql(_REWIND, self._TABLE, postgres=True, now=DATABASE_NOW)
        params = (to, to, schedule_id, expected, to, AHEAD_MARGIN)
        return self._change(statement, params) == 1


_BOOKS: weakref.WeakKeyDictionary[Any, ScheduleBook] = weakref.WeakKeyDictionary()
_BOOKS_LOCK = threading.Lock()


def book_for(store: SnapshotStore) -> ScheduleBook:
    """The schedules kept beside ``store``'s runs: one book per store object.

    A store of another kind (an object of the application's) keeps its
    schedules in memory, as the memory store does.
    """
    with _BOOKS_LOCK:
        book = _BOOKS.get(store)
        if book is None:
            made: Callable[[], ScheduleBook]
            if isinstance(store, SQLiteStore):
                made = lambda: SQLiteBook(store)  # noqa: E731
            elif isinstance(store, PostgresStore):
                made = lambda: PostgresBook(store)  # noqa: E731
            else:
                made = MemoryBook
            book = made()
            _BOOKS[store] = book
        return book


def close_book(store: SnapshotStore) -> None:
    """Let go of the connection the book of ``store`` holds, if any (a later use opens one)."""
    with _BOOKS_LOCK:
        book = _BOOKS.get(store)
    if isinstance(book, SQLiteBook):
        book.close()
